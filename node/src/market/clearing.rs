//! Market efficiency: the gains from trade the agreed trades realised, against those of a
//! central uniform-price clearing of the same limit orders, slot by slot. The simulation
//! harness and the testnet's report both measure with it.

use wattmesh_protocol::offer::Side;

/// A limit order: what a home was willing to trade in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    /// The home (an index the caller chooses).
    pub home: usize,
    /// The slot.
    pub slot_ms: u64,
    /// Sell or buy.
    pub side: Side,
    /// The seller's floor or the buyer's ceiling, thousandths of a minor unit per kWh.
    pub limit_price: u64,
    /// Energy, Wh.
    pub quantity_wh: u64,
}

/// An agreed trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// The slot.
    pub slot_ms: u64,
    /// The selling home.
    pub seller: usize,
    /// The buying home.
    pub buyer: usize,
    /// Energy, Wh.
    pub energy_wh: u64,
}

/// Gains from trade, milli-minor units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gains {
    /// Σ over trades of (the buyer's limit − the seller's limit) × energy, for trades whose
    /// two sides had limit orders in the slot.
    pub realised: u64,
    /// What a central uniform-price clearing of the same orders would realise.
    pub central: u64,
}

impl Gains {
    /// Realised over central (1 when neither gained anything).
    pub fn efficiency(&self) -> f64 {
        if self.central == 0 {
            if self.realised == 0 { 1.0 } else { f64::NAN }
        } else {
            self.realised as f64 / self.central as f64
        }
    }
}

/// Measures the gains of `fills` against a central clearing of `orders`.
pub fn gains(orders: &[Order], fills: &[Fill]) -> Gains {
    let limit = |home: usize, slot: u64, side: Side| {
        orders
            .iter()
            .find(|o| o.home == home && o.slot_ms == slot && o.side == side)
            .map(|o| o.limit_price)
    };
    let mut realised: u128 = 0;
    for f in fills {
        if let (Some(ask), Some(bid)) = (
            limit(f.seller, f.slot_ms, Side::Sell),
            limit(f.buyer, f.slot_ms, Side::Buy),
        ) {
            realised += u128::from(bid.saturating_sub(ask)) * u128::from(f.energy_wh) / 1000;
        }
    }
    let mut central: u128 = 0;
    let slots: std::collections::BTreeSet<u64> = orders.iter().map(|o| o.slot_ms).collect();
    for s in slots {
        let side_of = |side: Side| -> Vec<(u64, u64)> {
            orders
                .iter()
                .filter(|o| o.slot_ms == s && o.side == side)
                .map(|o| (o.limit_price, o.quantity_wh))
                .collect()
        };
        let mut bids = side_of(Side::Buy);
        let mut asks = side_of(Side::Sell);
        bids.sort_by_key(|b| std::cmp::Reverse(b.0));
        asks.sort_by_key(|a| a.0);
        let (mut i, mut j) = (0, 0);
        while i < bids.len() && j < asks.len() && bids[i].0 >= asks[j].0 {
            let q = bids[i].1.min(asks[j].1);
            central += u128::from(bids[i].0 - asks[j].0) * u128::from(q) / 1000;
            bids[i].1 -= q;
            asks[j].1 -= q;
            if bids[i].1 == 0 {
                i += 1;
            }
            if asks[j].1 == 0 {
                j += 1;
            }
        }
    }
    Gains {
        realised: u64::try_from(realised).unwrap_or(u64::MAX),
        central: u64::try_from(central).unwrap_or(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(home: usize, side: Side, limit_price: u64, quantity_wh: u64) -> Order {
        Order {
            home,
            slot_ms: 0,
            side,
            limit_price,
            quantity_wh,
        }
    }

    #[test]
    fn central_clearing_matches_the_best_pairs_first() {
        // Two sellers at 5 and 8, two buyers at 12 and 6 (c/kWh), 1 kWh each. Central clearing
        // pairs 12 with 5 (gain 7); 6 < 8 stops it. A market that paired 12 with 8 instead
        // realises 4 of the 7.
        let orders = [
            o(0, Side::Sell, 5_000, 1_000),
            o(1, Side::Sell, 8_000, 1_000),
            o(2, Side::Buy, 12_000, 1_000),
            o(3, Side::Buy, 6_000, 1_000),
        ];
        let g = gains(
            &orders,
            &[Fill {
                slot_ms: 0,
                seller: 1,
                buyer: 2,
                energy_wh: 1_000,
            }],
        );
        assert_eq!(g.central, 7_000);
        assert_eq!(g.realised, 4_000);
        assert!((g.efficiency() - 4.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn partial_quantities_and_no_orders() {
        let orders = [o(0, Side::Sell, 5_000, 300), o(1, Side::Buy, 9_000, 1_000)];
        // Only 300 Wh can clear: 4 c/kWh × 0.3 kWh.
        assert_eq!(gains(&orders, &[]).central, 1_200);
        assert_eq!(gains(&[], &[]).efficiency(), 1.0);
    }
}
