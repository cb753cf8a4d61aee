use super::*;
use crate::market::trader::{self, Limits};
use wattmesh_protocol::ids::NeighbourhoodId;
use wattmesh_protocol::offer::{Offer, OfferId};
use wattmesh_protocol::{NodeId, charter::Charter};

/// 2026-06-22 19:00 UTC: 14:00 in Ames (CDT, UTC-5).
const SLOT: u64 = 1_782_154_800_000;
const GATE: u64 = SLOT - 60_000;

fn ctx() -> Ctx {
    Ctx {
        currency: "USD".into(),
        utc_offset_minutes: -300,
        slot_minutes: 15,
    }
}

fn neighbour() -> NodeId {
    let mut id = [0x11; 32];
    id[..4].copy_from_slice(&[0x7f, 0x3a, 0x91, 0xc0]);
    NodeId(id)
}

fn why(forecast_wh: i64, wanted_wh: u64, done_wh: u64, limit: u64, ramp: u64) -> Why {
    Why {
        forecast_wh,
        keep_back_wh: 50,
        max_wh: 5_000,
        wanted_wh,
        done_wh,
        taking_wh: 0,
        limit_price: limit,
        ramp_price: ramp,
        gate_ms: GATE,
        duplicate: false,
    }
}

fn text(a: &Action) -> (String, String) {
    let t = describe(a, &ctx(), 1, a.slot_ms());
    (t.what, t.why)
}

#[test]
fn units_and_times_read_as_people_write_them() {
    assert_eq!(energy(300), "300 Wh");
    assert_eq!(energy(5_000), "5.0 kWh");
    assert_eq!(energy(1_250), "1.25 kWh");
    let t = ctx();
    assert_eq!(t.price(9_000), "9.0 ¢/kWh");
    assert_eq!(t.price(12_345), "12.345 ¢/kWh");
    assert_eq!(t.price(950), "0.95 ¢/kWh");
    assert_eq!(t.slot(SLOT), "14:00–14:15");
    assert_eq!(t.clock(GATE), "13:59");
    // East of UTC and across midnight.
    let eu = Ctx {
        currency: "EUR".into(),
        utc_offset_minutes: 330,
        slot_minutes: 30,
    };
    assert_eq!(eu.slot(SLOT), "00:30–01:00");
    assert_eq!(eu.price(9_000), "9.0 c/kWh");
}

#[test]
fn a_take_says_who_how_much_at_what_price_and_why() {
    let a = Action::Take {
        offer: OfferId {
            maker: neighbour(),
            nonce: 3,
        },
        side: Side::Sell,
        slot_ms: SLOT,
        energy_wh: 300,
        price: 9_000,
        why: why(420, 370, 0, 8_000, 9_000),
    };
    assert_eq!(
        text(&a),
        (
            "Took 7f3a-91c0's bid: selling 300 Wh at 9.0 ¢/kWh for 14:00–14:15".into(),
            "forecast surplus 420 Wh, keeping 50 Wh back; their 9.0 ¢ meets the asking price now, \
             9.0 ¢ (your floor is 8.0 ¢); agreed once they countersign"
                .into()
        )
    );
    let b = Action::Take {
        offer: OfferId {
            maker: neighbour(),
            nonce: 4,
        },
        side: Side::Buy,
        slot_ms: SLOT,
        energy_wh: 800,
        price: 10_500,
        why: Why {
            max_wh: 800,
            ..why(-1_200, 800, 0, 11_000, 10_800)
        },
    };
    assert_eq!(
        text(&b),
        (
            "Took 7f3a-91c0's offer: buying 800 Wh at 10.5 ¢/kWh for 14:00–14:15".into(),
            "forecast deficit 1.2 kWh, buying at most 800 Wh per slot; their 10.5 ¢ is within the \
             bid now, 10.8 ¢ (your ceiling is 11.0 ¢); agreed once they countersign"
                .into()
        )
    );
}

#[test]
fn posts_and_ramp_steps_explain_the_price() {
    let post = Action::Post {
        side: Side::Sell,
        slot_ms: SLOT,
        quantity_wh: 270,
        price: 12_000,
        why: why(420, 370, 100, 8_000, 12_000),
    };
    assert_eq!(
        text(&post),
        (
            "Offered 270 Wh for sale at 12.0 ¢/kWh for 14:00–14:15".into(),
            "forecast surplus 420 Wh, keeping 50 Wh back, 100 Wh already sold or being agreed; \
             asking 12.0 ¢ now, stepping down to your floor of 8.0 ¢ by 13:59"
                .into()
        )
    );
    let lower = Action::Resize {
        nonce: 9,
        side: Side::Sell,
        slot_ms: SLOT,
        was_wh: 270,
        was_price: 12_000,
        quantity_wh: 270,
        price: 11_000,
        why: why(420, 370, 100, 8_000, 11_000),
    };
    assert_eq!(
        text(&lower),
        (
            "Lowered the sell offer of 270 Wh for 14:00–14:15 to 11.0 ¢/kWh (was 12.0 ¢)".into(),
            "no bid has met the asking price yet; asking 11.0 ¢ now, stepping down to your floor \
             of 8.0 ¢ by 13:59"
                .into()
        )
    );
    let bid = Action::Post {
        side: Side::Buy,
        slot_ms: SLOT,
        quantity_wh: 600,
        price: 11_000,
        why: why(-600, 600, 0, 11_000, 11_000),
    };
    assert_eq!(
        text(&bid),
        (
            "Bid for 600 Wh at 11.0 ¢/kWh for 14:00–14:15".into(),
            "forecast deficit 600 Wh; bidding your ceiling of 11.0 ¢ until trading closes at 13:59"
                .into()
        )
    );
    let gone = Action::Resize {
        nonce: 9,
        side: Side::Sell,
        slot_ms: SLOT,
        was_wh: 270,
        was_price: 9_000,
        quantity_wh: 0,
        price: 9_000,
        why: Why {
            taking_wh: 270,
            ..why(420, 370, 100, 8_000, 9_000)
        },
    };
    assert_eq!(
        text(&gone),
        (
            "Withdrew the sell offer for 14:00–14:15 (270 Wh at 9.0 ¢/kWh)".into(),
            "its energy goes to a neighbour's bid taken at a better price instead; forecast \
             surplus 420 Wh, keeping 50 Wh back, 100 Wh already sold or being agreed"
                .into()
        )
    );
}

#[test]
fn doing_nothing_says_why() {
    let hold = |why| Action::Hold { slot_ms: SLOT, why };
    assert_eq!(
        text(&hold(Hold::NoSurplus {
            forecast_wh: 30,
            keep_back_wh: 50
        })),
        (
            "Did nothing for 14:00–14:15".into(),
            "forecast surplus 30 Wh is no more than the 50 Wh you keep back".into()
        )
    );
    assert_eq!(
        text(&hold(Hold::NoSurplus {
            forecast_wh: 0,
            keep_back_wh: 50
        }))
        .1,
        "no forecast surplus or deficit"
    );
    assert_eq!(
        text(&hold(Hold::OutsideHours {
            from_hour: 10,
            to_hour: 16,
            utc_offset_minutes: -300
        }))
        .1,
        "outside your trading hours, 10:00–16:00"
    );
    assert_eq!(
        text(&hold(Hold::BuyingOff { forecast_wh: -900 })).1,
        "forecast deficit 900 Wh, but buying is switched off"
    );
    assert_eq!(
        text(&hold(Hold::SellingOff { forecast_wh: 2_400 })).1,
        "forecast surplus 2.4 kWh, but selling is switched off"
    );
    // Limits reached: the most per slot, or all the forecast wants.
    assert_eq!(
        text(&hold(Hold::LimitReached {
            side: Side::Sell,
            forecast_wh: 6_200,
            done_wh: 5_000,
            wanted_wh: 5_000,
            max_wh: 5_000,
            keep_back_wh: 50
        }))
        .1,
        "5.0 kWh already sold or being agreed, your most per slot (forecast surplus 6.2 kWh)"
    );
    assert_eq!(
        text(&hold(Hold::LimitReached {
            side: Side::Sell,
            forecast_wh: 420,
            done_wh: 370,
            wanted_wh: 370,
            max_wh: 5_000,
            keep_back_wh: 50
        }))
        .1,
        "370 Wh already sold or being agreed: all of the forecast surplus 420 Wh less the 50 Wh \
         you keep back"
    );
    assert_eq!(
        text(&hold(Hold::LimitReached {
            side: Side::Buy,
            forecast_wh: -300,
            done_wh: 300,
            wanted_wh: 300,
            max_wh: 5_000,
            keep_back_wh: 50
        }))
        .1,
        "300 Wh already bought or being agreed: all of the forecast deficit 300 Wh"
    );
    // Prices outside the limits.
    let waiting = |best| Hold::Waiting {
        side: Side::Sell,
        offer_wh: 370,
        price: 10_000,
        limit_price: 8_000,
        best,
        gate_ms: GATE,
    };
    assert_eq!(
        text(&hold(waiting(Some((6_500, neighbour()))))),
        (
            "Kept the sell offer of 370 Wh at 10.0 ¢/kWh for 14:00–14:15".into(),
            "the best bid, 6.5 ¢ from 7f3a-91c0, is below your floor of 8.0 ¢".into()
        )
    );
    assert_eq!(
        text(&hold(waiting(Some((8_500, neighbour()))))).1,
        "the best bid, 8.5 ¢ from 7f3a-91c0, is below the price now; the price steps down to \
         your floor of 8.0 ¢ by 13:59"
    );
    assert_eq!(
        text(&hold(waiting(None))).1,
        "no neighbour is bidding for this slot yet"
    );
    let buy = Hold::Waiting {
        side: Side::Buy,
        offer_wh: 600,
        price: 6_000,
        limit_price: 11_000,
        best: Some((12_000, neighbour())),
        gate_ms: GATE,
    };
    assert_eq!(
        text(&hold(buy)).1,
        "the cheapest sell offer, 12.0 ¢ from 7f3a-91c0, is above your ceiling of 11.0 ¢"
    );
    // Repeated over slots.
    let t = describe(
        &Action::Hold {
            slot_ms: SLOT + 3 * 900_000,
            why: Hold::NoSurplus {
                forecast_wh: 0,
                keep_back_wh: 50,
            },
        },
        &ctx(),
        4,
        SLOT,
    );
    assert_eq!(t.what, "Did nothing for 4 slots, 14:00–15:00");
}

fn charter() -> Charter {
    Charter::founding(NeighbourhoodId([0; 16]), "t", NodeId([1; 32]), 0)
}

fn limits() -> Limits {
    Limits {
        enabled: true,
        min_sell_price: 8_000,
        utc_offset_minutes: -300,
        ..Limits::default()
    }
}

fn offer(maker: NodeId, nonce: u64, side: Side, quantity_wh: u64, price: u64) -> Offer {
    Offer {
        maker,
        nonce,
        version: 1,
        side,
        slot_ms: SLOT,
        quantity_wh,
        min_fill_wh: 1,
        price,
        created_ms: SLOT - 3_600_000,
        expires_ms: GATE,
        attributes: 0,
        ext: Vec::new(),
    }
}

/// The trader's own decisions, put into words: what the owner reads for real books.
#[test]
fn decisions_in_words() {
    let c = charter();
    let l = limits();
    let me = NodeId([9; 32]);
    // Two minutes before the gate closes: the ramp (20 minutes) is 90% done, from 13.5 ¢
    // (retail) to 8.55 ¢.
    let now = GATE - 120_000;
    let mut book = crate::book::Book::new();
    book.insert(offer(me, 1, Side::Sell, 370, 8_550), Vec::new());
    book.insert(offer(neighbour(), 2, Side::Buy, 500, 6_500), Vec::new());
    let run = |book: &crate::book::Book, f: i64, pending: u64| {
        trader::decide(
            now,
            &c,
            &l,
            -300,
            me,
            book,
            &[],
            &|s| if s == SLOT { f } else { 0 },
            &|_, _| pending,
        )
        .into_iter()
        .filter(|a| a.slot_ms() == SLOT)
        .map(|a| text(&a))
        .collect::<Vec<_>>()
    };
    // Our offer stands at the ramp's price; the only bid is below the floor.
    assert_eq!(
        run(&book, 420, 0),
        [(
            "Kept the sell offer of 370 Wh at 8.55 ¢/kWh for 14:00–14:15".to_owned(),
            "the best bid, 6.5 ¢ from 7f3a-91c0, is below your floor of 8.0 ¢".to_owned()
        )]
    );
    // Everything is being agreed already: the offer is withdrawn.
    assert_eq!(
        run(&book, 420, 370),
        [(
            "Withdrew the sell offer for 14:00–14:15 (370 Wh at 8.55 ¢/kWh)".to_owned(),
            "nothing is left to trade: forecast surplus 420 Wh, keeping 50 Wh back, 370 Wh \
             already sold or being agreed"
                .to_owned()
        )]
    );
    // A bid at the floor arrives: taken, and our offer gives its energy up.
    book.insert(offer(neighbour(), 3, Side::Buy, 300, 9_000), Vec::new());
    let r = run(&book, 420, 0);
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(
        r[0].0,
        "Changed the sell offer for 14:00–14:15 to 70 Wh at 8.55 ¢/kWh (was 370 Wh at 8.55 ¢/kWh)"
    );
    assert_eq!(
        r[1].0,
        "Took 7f3a-91c0's bid: selling 300 Wh at 9.0 ¢/kWh for 14:00–14:15"
    );
    // No surplus: nothing, and why.
    assert_eq!(
        run(&crate::book::Book::new(), 20, 0),
        [(
            "Did nothing for 14:00–14:15".to_owned(),
            "forecast surplus 20 Wh is no more than the 50 Wh you keep back".to_owned()
        )]
    );
    // Outside the owner's hours (10:00 to 13:00 local; the slot is at 14:00).
    let short_day = Limits {
        from_hour: 10,
        to_hour: 13,
        ..limits()
    };
    let held = trader::decide(
        now,
        &c,
        &short_day,
        -300,
        me,
        &book,
        &[],
        &|_| 420,
        &|_, _| 0,
    );
    assert!(held.iter().all(|a| !a.acts()), "{held:?}");
    assert_eq!(
        text(held.iter().find(|a| a.slot_ms() == SLOT).unwrap()).1,
        "outside your trading hours, 10:00–13:00"
    );
}
