//! One delivery slot of a simulated neighbourhood, played through the real protocol code.
//!
//! Every home has its own key. Sellers gossip signed offers that every other home validates
//! with its own [`Validator`]; buyers take the cheapest acceptable offer through the bilateral
//! handshake (proposal, maker-signed trade, countersignature), each step encoded and decoded
//! as it would cross the network; after the slot each home attests its meter with a Merkle
//! commitment to its sales, and every trade is settled with an inclusion proof.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use wattmesh_protocol::attestation::{MeterAttestation, MeterStatus};
use wattmesh_protocol::charter::{Charter, CharterChain, SignedCharter};
use wattmesh_protocol::codec;
use wattmesh_protocol::envelope::Envelope;
use wattmesh_protocol::merkle;
use wattmesh_protocol::offer::{Offer, OfferId, Side};
use wattmesh_protocol::roster::{Change, MAX_NAME_BYTES, Profile, Roster, sign_change};
use wattmesh_protocol::settle::{Outcome, settle};
use wattmesh_protocol::settlement::Settlement;
use wattmesh_protocol::slot;
use wattmesh_protocol::trade::{
    Trade, TradeProposal, TradeRequest, TradeResponse, terms_acceptable,
};
use wattmesh_protocol::validate::{Msg, Validator, validate_archival};
use wattmesh_protocol::{Hash32, NeighbourhoodId, NodeId, NodeKey};

/// A small deterministic generator (SplitMix64), so a seed replays exactly.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

struct Home {
    name: String,
    key: NodeKey,
    validator: Validator,
    /// Energy this home will have to sell (positive) or wants (negative) in the slot, Wh.
    net_wh: i64,
    limit_price: u64,
    offer: Option<Offer>,
    remaining_wh: u64,
    trades: Vec<Trade>,
}

/// What the walkthrough found, for tests and printing.
#[derive(Debug, Default)]
pub struct Summary {
    /// Offers gossiped.
    pub offers: usize,
    /// Offer deliveries accepted by receiving homes.
    pub offer_deliveries_accepted: usize,
    /// Trades agreed.
    pub trades: usize,
    /// Energy agreed, Wh.
    pub energy_agreed_wh: u64,
    /// Energy counted as delivered, Wh.
    pub energy_delivered_wh: u64,
    /// Sum of all ledger balances, milli-minor units (must be 0).
    pub ledger_sum: i128,
    /// Trades any seller committed beyond its offers (must be 0).
    pub oversold: usize,
    /// Short deliveries.
    pub short: usize,
    /// The printed report.
    pub report: String,
}

/// Plays one slot for `homes` homes from `seed`.
pub fn run(homes: usize, seed: u64) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        (2..=200).contains(&homes),
        "homes must be between 2 and 200"
    );
    let mut rng = Rng(seed);
    let mut out = String::new();
    let admin = NodeKey::from_secret(&seed_bytes(&mut rng));
    let now = 1_782_043_200_000u64; // 2026-06-21 12:00 UTC
    let charter = SignedCharter::found(
        Charter::founding(
            NeighbourhoodId(*b"walkthrough-ames"),
            "Walkthrough Lane, Ames",
            admin.node_id(),
            0,
        ),
        &admin,
    )?;
    let c = charter.charter.clone();
    let chain = CharterChain::new(charter.clone())?;
    let slot_ms = slot::first_open_slot(&c, now);
    writeln!(
        out,
        "neighbourhood {:?}, charter {}",
        c.name,
        &charter.hash.to_hex()[..16]
    )?;
    writeln!(
        out,
        "slot starts {slot_ms} (UTC ms); band {}..{} m¢/kWh",
        c.feed_in_price, c.retail_price
    )?;

    let mut hs: Vec<Home> = (0..homes)
        .map(|i| {
            let key = NodeKey::from_secret(&seed_bytes(&mut rng));
            let net_wh = rng.range(0, 1_600) as i64 - 700;
            let limit_price = rng.range(c.feed_in_price + 1_000, c.retail_price - 1_000);
            Home {
                name: format!("home-{i:02} {}", key.node_id().short()),
                key,
                validator: Validator::new(),
                net_wh,
                limit_price,
                offer: None,
                remaining_wh: 0,
                trades: Vec::new(),
            }
        })
        .collect();

    // The admin adds every home to the roster; only members' offers are accepted.
    let mut roster = Roster::new(&chain);
    for h in &hs {
        let change = Change::Add {
            member: h.key.node_id(),
            profile: Profile {
                name: h.name.chars().take(MAX_NAME_BYTES).collect(),
                pv_capacity_w: 6_000,
            },
        };
        roster.insert(
            &sign_change(&chain, &admin, 0, change).to_bytes(),
            &chain,
            None,
        )?;
    }

    // Sellers post offers; every other home validates each one as it arrives by gossip.
    let mut summary = Summary::default();
    let mut book: Vec<(usize, Offer)> = Vec::new();
    for i in 0..hs.len() {
        if hs[i].net_wh <= 0 {
            continue;
        }
        let o = Offer {
            maker: hs[i].key.node_id(),
            nonce: rng.next(),
            version: 1,
            side: Side::Sell,
            slot_ms,
            quantity_wh: hs[i].net_wh as u64,
            min_fill_wh: 50.min(hs[i].net_wh as u64),
            price: hs[i].limit_price,
            created_ms: now,
            expires_ms: slot::gate_closure(&c, slot_ms),
            attributes: wattmesh_protocol::offer::ATTR_GREEN,
            ext: Vec::new(),
        };
        let bytes = Envelope::seal(&o, charter.hash, &hs[i].key).to_bytes();
        summary.offers += 1;
        for (j, h) in hs.iter_mut().enumerate() {
            if j != i
                && h.validator
                    .validate_gossip(&bytes, &chain, &roster, now + 50)
                    .is_ok()
            {
                summary.offer_deliveries_accepted += 1;
            }
        }
        hs[i].remaining_wh = o.quantity_wh;
        hs[i].offer = Some(o.clone());
        book.push((i, o));
    }
    book.sort_by_key(|(_, o)| o.price);

    // Buyers take the cheapest offers at or below their limit, through the handshake.
    let mut t_ms = now + 1_000;
    for b in 0..hs.len() {
        let mut want = (-hs[b].net_wh).max(0) as u64;
        for (s, offer) in &book {
            if want == 0 || offer.price > hs[b].limit_price {
                break;
            }
            let take = want.min(hs[*s].remaining_wh);
            if take == 0 || take < offer.min_fill_wh {
                continue;
            }
            t_ms += 10;
            let proposal = TradeProposal {
                taker: hs[b].key.node_id(),
                nonce: rng.next(),
                offer: OfferId {
                    maker: offer.maker,
                    nonce: offer.nonce,
                },
                offer_version: offer.version,
                slot_ms,
                energy_wh: take,
                price: offer.price,
                created_ms: t_ms,
                ext: Vec::new(),
            };
            let request = codec::encode(&TradeRequest::Propose(Envelope::seal(
                &proposal,
                charter.hash,
                &hs[b].key,
            )));
            // The maker receives, validates and checks the terms against its current offer.
            let TradeRequest::Propose(env) = codec::decode_canonical(&request, 1 << 16)? else {
                anyhow::bail!("expected a proposal");
            };
            let accepted = validate_archival(&env.to_bytes(), &chain, false)?;
            let Msg::TradeProposal(p) = accepted.msg else {
                anyhow::bail!("not a proposal")
            };
            let current = hs[*s]
                .offer
                .clone()
                .ok_or_else(|| anyhow::anyhow!("no offer"))?;
            let mut current_now = current.clone();
            current_now.quantity_wh = hs[*s].remaining_wh;
            if terms_acceptable(&current_now, &p, t_ms).is_err() {
                continue;
            }
            hs[*s].remaining_wh -= p.energy_wh; // the reservation
            let trade = Trade::from_proposal(&current, &p, t_ms);
            let response = codec::encode(&TradeResponse::Accept(Envelope::seal(
                &trade,
                charter.hash,
                &hs[*s].key,
            )));
            // The taker checks the maker's signature and the terms, then countersigns.
            let TradeResponse::Accept(mut env) = codec::decode_canonical(&response, 1 << 16)?
            else {
                anyhow::bail!("expected an accept");
            };
            validate_archival(&env.to_bytes(), &chain, true)?;
            anyhow::ensure!(
                env.payload_as::<Trade>()?.matches_proposal(&proposal),
                "maker changed the terms"
            );
            env.add_signature(&hs[b].key);
            let done = validate_archival(&env.to_bytes(), &chain, false)?;
            let Msg::Trade(t) = done.msg else {
                anyhow::bail!("not a trade")
            };
            want -= t.energy_wh;
            summary.trades += 1;
            summary.energy_agreed_wh += t.energy_wh;
            writeln!(
                out,
                "trade: {} sells {:>4} Wh to {} at {} m¢/kWh",
                hs[*s].name, t.energy_wh, hs[b].name, t.price
            )?;
            hs[*s].trades.push(t.clone());
            hs[b].trades.push(t);
        }
    }

    // After the slot: attestations (some sellers fall short), then settlement with proofs.
    let end = slot::slot_end(&c, slot_ms);
    let mut atts: BTreeMap<NodeId, MeterAttestation> = BTreeMap::new();
    for h in &hs {
        let id = h.key.node_id();
        let sold: Vec<_> = h
            .trades
            .iter()
            .filter(|t| t.seller() == id)
            .map(|t| (t.id(), t.energy_wh))
            .collect();
        let bought: Vec<_> = h
            .trades
            .iter()
            .filter(|t| t.buyer() == id)
            .map(|t| (t.id(), t.energy_wh))
            .collect();
        let sold_root = merkle::root(&sold).ok_or_else(|| anyhow::anyhow!("sum overflow"))?;
        let export = if h.net_wh > 0 {
            // One in four sellers has a cloud pass and exports only 60-100 % of its forecast.
            let f = if rng.range(0, 3) == 0 {
                rng.range(60, 100)
            } else {
                100
            };
            h.net_wh as u64 * f / 100
        } else {
            0
        };
        let a = MeterAttestation {
            node: id,
            seq: 0,
            prev: Hash32::ZERO,
            slot_ms,
            import_register_wh: 50_000 + (-h.net_wh).max(0) as u64,
            export_register_wh: 20_000 + export,
            import_wh: (-h.net_wh).max(0) as u64,
            export_wh: export,
            coverage_permille: 1000,
            status: MeterStatus::Simulated,
            sold: sold_root,
            bought: merkle::root(&bought).ok_or_else(|| anyhow::anyhow!("sum overflow"))?,
            created_ms: end + 2_000,
            ext: Vec::new(),
        };
        let bytes = Envelope::seal(&a, charter.hash, &h.key).to_bytes();
        let acc = Validator::new().validate_gossip(&bytes, &chain, &roster, end + 2_500)?;
        let Msg::Attestation(a) = acc.msg else {
            anyhow::bail!("not an attestation")
        };
        atts.insert(id, a);
    }
    let mut ledger: BTreeMap<NodeId, i128> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for h in &hs {
        for t in &h.trades {
            if !seen.insert(t.id()) {
                continue;
            }
            let seller = &hs
                .iter()
                .find(|x| x.key.node_id() == t.seller())
                .ok_or_else(|| anyhow::anyhow!("seller"))?;
            let leaves: Vec<_> = seller
                .trades
                .iter()
                .filter(|x| x.seller() == t.seller())
                .map(|x| (x.id(), x.energy_wh))
                .collect();
            let proof =
                merkle::prove(&leaves, &t.id()).ok_or_else(|| anyhow::anyhow!("no proof"))?;
            let sa = atts
                .get(&t.seller())
                .ok_or_else(|| anyhow::anyhow!("no attestation"))?;
            let r = settle(t, Some((sa, &proof)), atts.get(&t.buyer()))?;
            let s = Settlement::new(t, &r, None, None, end + 60_000);
            let mut env = Envelope::seal(
                &s,
                charter.hash,
                &hs.iter()
                    .find(|x| x.key.node_id() == s.seller)
                    .ok_or_else(|| anyhow::anyhow!("seller"))?
                    .key,
            );
            env.add_signature(
                &hs.iter()
                    .find(|x| x.key.node_id() == s.buyer)
                    .ok_or_else(|| anyhow::anyhow!("buyer"))?
                    .key,
            );
            validate_archival(&env.to_bytes(), &chain, false)?;
            *ledger.entry(s.seller).or_default() += s.amount as i128;
            *ledger.entry(s.buyer).or_default() -= s.amount as i128;
            summary.energy_delivered_wh += s.delivered_wh;
            if matches!(r.outcome, Outcome::Short | Outcome::ShortPartialCoverage) {
                summary.short += 1;
            }
        }
    }
    for h in &hs {
        let committed: u64 = h
            .trades
            .iter()
            .filter(|t| t.seller() == h.key.node_id())
            .map(|t| t.energy_wh)
            .sum();
        if committed > h.net_wh.max(0) as u64 {
            summary.oversold += 1;
        }
    }
    summary.ledger_sum = ledger.values().sum();
    writeln!(out, "\nstatement (+ owed to the home, - owed by it), in ¢:")?;
    for h in &hs {
        if let Some(b) = ledger.get(&h.key.node_id()) {
            writeln!(out, "  {:<20} {:>+10.3}", h.name, *b as f64 / 1000.0)?;
        }
    }
    writeln!(
        out,
        "\n{} homes, {} offers ({} deliveries accepted), {} trades, {} Wh agreed, {} Wh delivered, {} short, ledger sum {}",
        homes,
        summary.offers,
        summary.offer_deliveries_accepted,
        summary.trades,
        summary.energy_agreed_wh,
        summary.energy_delivered_wh,
        summary.short,
        summary.ledger_sum
    )?;
    summary.report = out;
    Ok(summary)
}

fn seed_bytes(rng: &mut Rng) -> [u8; 32] {
    let mut b = [0u8; 32];
    for chunk in b.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_trades_settles_and_balances() {
        let s = run(12, 7).unwrap();
        assert!(s.trades > 0, "{}", s.report);
        assert_eq!(s.oversold, 0);
        assert_eq!(s.ledger_sum, 0);
        assert!(s.energy_delivered_wh <= s.energy_agreed_wh);
        assert_eq!(s.offer_deliveries_accepted, s.offers * 11);
    }

    #[test]
    fn the_same_seed_replays_exactly() {
        assert_eq!(run(8, 3).unwrap().report, run(8, 3).unwrap().report);
    }
}
