//! The settlement rule: full and short delivery, a short delivery split across buyers who see
//! only their own trade, missing attestations, partial coverage, and a ledger that sums to zero.

use proptest::prelude::*;
use wattmesh_protocol::attestation::{MeterAttestation, MeterStatus};
use wattmesh_protocol::merkle::{self, SumNode};
use wattmesh_protocol::offer::{OfferId, Side};
use wattmesh_protocol::settle::{DisputeCause, Outcome, settle};
use wattmesh_protocol::units::cost;
use wattmesh_protocol::{Hash32, NodeId, Settlement, Trade};

const SLOT: u64 = 1_782_064_800_000;

fn seller() -> NodeId {
    NodeId([0x5e; 32])
}

fn buyer(i: u8) -> NodeId {
    NodeId([i; 32])
}

fn trade(buyer_no: u8, energy: u64, price: u64) -> Trade {
    Trade {
        offer: OfferId {
            maker: seller(),
            nonce: 1,
        },
        offer_version: 1,
        maker_side: Side::Sell,
        taker: buyer(buyer_no),
        nonce: buyer_no as u64,
        slot_ms: SLOT,
        energy_wh: energy,
        price,
        agreed_ms: SLOT - 120_000,
        ext: vec![],
    }
}

fn attestation(
    node: NodeId,
    export: u64,
    import: u64,
    sold: SumNode,
    bought: SumNode,
) -> MeterAttestation {
    MeterAttestation {
        node,
        seq: 1,
        prev: Hash32([1; 32]),
        slot_ms: SLOT,
        import_register_wh: 1_000_000,
        export_register_wh: 1_000_000,
        import_wh: import,
        export_wh: export,
        coverage_permille: 1000,
        status: MeterStatus::Ok,
        sold,
        bought,
        created_ms: SLOT + 900_000,
        ext: vec![],
    }
}

fn sold_root(trades: &[Trade]) -> SumNode {
    merkle::root(
        &trades
            .iter()
            .map(|t| (t.id(), t.energy_wh))
            .collect::<Vec<_>>(),
    )
    .expect("sum")
}

fn proof_for(trades: &[Trade], t: &Trade) -> Vec<merkle::ProofStep> {
    let leaves: Vec<_> = trades.iter().map(|t| (t.id(), t.energy_wh)).collect();
    merkle::prove(&leaves, &t.id()).expect("in tree")
}

#[test]
fn full_delivery() {
    let t = trade(1, 1_000, 9_500);
    let s = attestation(
        seller(),
        1_200,
        0,
        sold_root(std::slice::from_ref(&t)),
        merkle::empty_root(),
    );
    let b = attestation(
        buyer(1),
        0,
        1_500,
        merkle::empty_root(),
        sold_root(std::slice::from_ref(&t)),
    );
    let p = proof_for(std::slice::from_ref(&t), &t);
    let r = settle(&t, Some((&s, &p)), Some(&b)).expect("settles");
    assert_eq!(r.delivered_wh, 1_000);
    assert_eq!(r.amount, 9_500_000 / 1000);
    assert_eq!(r.outcome, Outcome::Delivered);
}

#[test]
fn short_delivery_is_split_pro_rata_across_buyers_who_see_only_their_own_trade() {
    let trades = [
        trade(1, 1_000, 9_000),
        trade(2, 500, 10_000),
        trade(3, 1_500, 8_000),
    ];
    let root = sold_root(&trades);
    assert_eq!(root.sum, 3_000);
    // The seller exported only 2 000 of the 3 000 Wh it sold.
    let att = attestation(seller(), 2_000, 0, root, merkle::empty_root());
    let leaves: Vec<_> = trades.iter().map(|t| (t.id(), t.energy_wh)).collect();
    let mut delivered = Vec::new();
    for t in &trades {
        // Each buyer has its own trade, the seller's attestation and an inclusion proof.
        let proof = merkle::prove(&leaves, &t.id()).expect("in tree");
        assert!(merkle::verify(&att.sold, &t.id(), t.energy_wh, &proof));
        let r = settle(t, Some((&att, &proof)), None).expect("settles");
        assert_eq!(r.outcome, Outcome::Short);
        assert_eq!(r.amount, cost(r.delivered_wh, t.price));
        delivered.push(r.delivered_wh);
    }
    assert_eq!(delivered, vec![666, 333, 1_000]);
    assert!(delivered.iter().sum::<u64>() <= 2_000);
}

#[test]
fn missing_seller_attestation_delivers_nothing() {
    let t = trade(1, 1_000, 9_500);
    let r = settle(&t, None, None).expect("settles");
    assert_eq!(
        (r.delivered_wh, r.amount, r.outcome),
        (0, 0, Outcome::NoSellerAttestation)
    );
}

#[test]
fn missing_buyer_attestation_does_not_cut_the_sellers_pay() {
    let t = trade(1, 1_000, 9_500);
    let s = attestation(
        seller(),
        1_000,
        0,
        sold_root(std::slice::from_ref(&t)),
        merkle::empty_root(),
    );
    assert_eq!(
        settle(&t, Some((&s, &[])), None)
            .expect("settles")
            .delivered_wh,
        1_000
    );
}

#[test]
fn the_buyers_own_figures_do_not_cut_what_it_pays() {
    // A buyer that imported less than it bought, or inflated its bought total, still pays
    // for what the seller delivered.
    let t = trade(1, 1_000, 9_500);
    let s = attestation(
        seller(),
        1_000,
        0,
        sold_root(std::slice::from_ref(&t)),
        merkle::empty_root(),
    );
    let inflated = SumNode {
        hash: Hash32([7; 32]),
        sum: 1_000_000,
    };
    let b = attestation(buyer(1), 0, 400, merkle::empty_root(), inflated);
    let r = settle(&t, Some((&s, &[])), Some(&b)).expect("settles");
    assert_eq!((r.delivered_wh, r.outcome), (1_000, Outcome::Delivered));
}

#[test]
fn partial_coverage_is_not_extrapolated() {
    let t = trade(1, 1_000, 9_500);
    let mut s = attestation(
        seller(),
        500,
        0,
        sold_root(std::slice::from_ref(&t)),
        merkle::empty_root(),
    );
    s.coverage_permille = 500;
    let r = settle(&t, Some((&s, &[])), None).expect("settles");
    assert_eq!(
        (r.delivered_wh, r.outcome),
        (500, Outcome::ShortPartialCoverage)
    );
    // Partial coverage that still shows full delivery is a full delivery.
    s.export_wh = 1_000;
    assert_eq!(
        settle(&t, Some((&s, &[])), None).expect("settles").outcome,
        Outcome::Delivered
    );
}

#[test]
fn a_trade_left_out_of_the_sellers_commitment_is_a_dispute() {
    // The seller sold three trades but commits to only two, so that its 2 000 Wh of export
    // would look like full delivery of 1 500 Wh.
    let trades = [
        trade(1, 1_000, 9_000),
        trade(2, 500, 10_000),
        trade(3, 1_500, 8_000),
    ];
    let committed = sold_root(&trades[..2]);
    let att = attestation(seller(), 2_000, 0, committed, merkle::empty_root());
    // The left-out buyer cannot get a proof; any proof it is given fails.
    let fake = proof_for(&trades, &trades[2]);
    assert_eq!(
        settle(&trades[2], Some((&att, &fake)), None),
        Err(DisputeCause::NotInCommitment)
    );
    assert_eq!(
        settle(&trades[2], Some((&att, &[])), None),
        Err(DisputeCause::NotInCommitment)
    );
    // The included buyers settle normally.
    let p = proof_for(&trades[..2], &trades[0]);
    assert_eq!(
        settle(&trades[0], Some((&att, &p)), None)
            .expect("settles")
            .delivered_wh,
        1_000
    );
    // An attestation by someone else is a dispute too.
    let t = &trades[0];
    let other = attestation(buyer(9), 5_000, 0, committed, merkle::empty_root());
    assert_eq!(
        settle(t, Some((&other, &p)), None),
        Err(DisputeCause::WrongAttestation)
    );
}

proptest! {
    /// Whatever the seller sold and exported: no buyer gets more than agreed, the seller
    /// is never credited for more than it exported, and the ledger sums to zero.
    #[test]
    fn rounding_keeps_the_ledger_at_zero(
        energies in prop::collection::vec(1u64..5_000, 1..12),
        prices in prop::collection::vec(4_000u64..13_500, 12),
        export in 0u64..60_000,
    ) {
        let trades: Vec<Trade> = energies.iter().enumerate()
            .map(|(i, &e)| trade(i as u8 + 1, e, prices[i])).collect();
        let att = attestation(seller(), export, 0, sold_root(&trades), merkle::empty_root());
        let mut ledger: std::collections::BTreeMap<NodeId, i128> = Default::default();
        let mut credited: u64 = 0;
        for t in &trades {
            let proof = proof_for(&trades, t);
            let r = settle(t, Some((&att, &proof)), None).expect("settles");
            prop_assert!(r.delivered_wh <= t.energy_wh);
            prop_assert_eq!(r.amount, cost(r.delivered_wh, t.price));
            let s = Settlement::new(t, &r, None, None, SLOT + 1_000_000);
            prop_assert!(s.self_consistent());
            *ledger.entry(s.seller).or_default() += s.amount as i128;
            *ledger.entry(s.buyer).or_default() -= s.amount as i128;
            credited += r.delivered_wh;
        }
        prop_assert_eq!(ledger.values().sum::<i128>(), 0);
        prop_assert!(credited <= export || export >= att.sold.sum);
        if export >= att.sold.sum {
            prop_assert_eq!(credited, att.sold.sum);
        } else {
            // Rounding down loses less than one Wh per trade.
            prop_assert!(credited + trades.len() as u64 > export);
        }
    }
}
