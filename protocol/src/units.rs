//! Integer units for energy and money. No floating point is ever signed or settled.
//!
//! - Energy: whole watt-hours ([`EnergyWh`]).
//! - Prices: thousandths of the currency's minor unit per kWh ([`PricePerKwh`]); for US dollars
//!   one unit is a thousandth of a cent per kWh, so 13.5 ¢/kWh is `13_500`.
//! - Money: thousandths of the minor unit ([`MilliMinor`]); for US dollars, a thousandth of a cent.
//!
//! Rounding rules (also in docs/PROTOCOL.md): money for an amount of energy is rounded down
//! ([`cost`]); a share of energy is rounded down ([`pro_rata`]). Each is computed once and
//! booked to both sides, so the ledger always sums to zero.

/// Energy in whole watt-hours.
pub type EnergyWh = u64;
/// A price in thousandths of the currency's minor unit per kWh.
pub type PricePerKwh = u64;
/// An amount of money in thousandths of the currency's minor unit.
pub type MilliMinor = u64;

/// The money due for `energy` at `price`, rounded down to a whole [`MilliMinor`].
///
/// `energy_wh * price / 1000`, computed in 128 bits so it cannot overflow for any inputs the
/// validation rules allow; saturates at `u64::MAX` for inputs they do not.
pub fn cost(energy: EnergyWh, price: PricePerKwh) -> MilliMinor {
    let v = (energy as u128 * price as u128) / 1000;
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// `part * num / den`, rounded down, in 128 bits. `den == 0` gives 0.
pub fn pro_rata(part: u64, num: u64, den: u64) -> u64 {
    if den == 0 {
        return 0;
    }
    let v = part as u128 * num as u128 / den as u128;
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Formats a price for people: `13_500` in USD is `13.500 ¢/kWh`.
pub fn format_price(price: PricePerKwh, minor_symbol: &str) -> String {
    format!("{}.{:03} {}/kWh", price / 1000, price % 1000, minor_symbol)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_rounds_down() {
        // 1 Wh at 13.5 ¢/kWh is 0.0135 ¢ = 13.5 milli-cents -> 13.
        assert_eq!(cost(1, 13_500), 13);
        assert_eq!(cost(1000, 13_500), 13_500);
        assert_eq!(cost(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn pro_rata_rounds_down_and_survives_zero() {
        assert_eq!(pro_rata(10, 1, 3), 3);
        assert_eq!(pro_rata(10, 1, 0), 0);
    }

    #[test]
    fn price_format() {
        assert_eq!(format_price(13_500, "¢"), "13.500 ¢/kWh");
    }
}
