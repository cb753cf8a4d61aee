//! The trades list a page at a time (pure): filters, a stable order and a cursor.
//!
//! Trades are listed newest slot first, ties broken by taker then nonce, so the order is total
//! and a cursor (the last trade of a page) says exactly where the next page starts, even when
//! trades are added between requests.

use crate::node::TradeView;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;

/// Trades per page when the request does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// The most trades one page may hold.
pub const MAX_LIMIT: usize = 500;

/// The status filters the trades page offers: a trade's status (see [`status_key`]), or
/// `standing` (made by a standing agreement) or `dispute` (with a dispute note).
pub const STATUS_FILTERS: &[&str] = &[
    "agreed",
    "maker_signed",
    "delivering",
    "awaiting",
    "settling",
    "settled",
    "short",
    "disputed",
    "standing",
    "dispute",
];

/// The query of `GET /api/trades`.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct TradeQuery {
    /// Trades per page, 1 to [`MAX_LIMIT`].
    pub limit: Option<usize>,
    /// Where the page starts: the `next_cursor` of the page before.
    pub cursor: Option<String>,
    /// One of [`STATUS_FILTERS`].
    pub status: Option<String>,
    /// `sell` or `buy`: our side.
    pub side: Option<String>,
    /// Text in the neighbour's name, short id or node id.
    pub who: Option<String>,
    /// Slots starting at or after this time (UTC ms).
    pub from: Option<u64>,
    /// Slots starting before this time (UTC ms).
    pub to: Option<u64>,
}

/// One page of trades.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    /// The trades, newest slot first.
    pub trades: Vec<T>,
    /// The cursor for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
    /// How many trades match the filters, on every page together.
    pub total: usize,
}

/// Where a page starts: just after this trade in the list's order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    slot: Reverse<u64>,
    taker: String,
    nonce: u64,
}

impl Key {
    fn of(t: &TradeView) -> Key {
        Key {
            slot: Reverse(t.slot_ms),
            taker: t.taker.to_ascii_lowercase(),
            nonce: t.nonce,
        }
    }

    fn encode(&self) -> String {
        format!("{}-{}-{}", self.slot.0, self.taker, self.nonce)
    }

    fn decode(s: &str) -> Option<Key> {
        let mut parts = s.split('-');
        let (slot, taker, nonce) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || taker.len() != 64
            || !taker.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return None;
        }
        Some(Key {
            slot: Reverse(slot.parse().ok()?),
            taker: taker.to_ascii_lowercase(),
            nonce: nonce.parse().ok()?,
        })
    }
}

/// A trade's status as the owner sees it: its settlement once there is one, else where its
/// slot stands at `now` (`slot_len_ms` long). The same rule as `tradeStatus` in the UI.
pub fn status_key(t: &TradeView, slot_len_ms: u64, now: u64) -> &'static str {
    use crate::market::{SettleState, TradeState};
    match t.settlement {
        Some(SettleState::Settled) => {
            if t.delivered_wh.is_some_and(|d| d < t.energy_wh) {
                "short"
            } else {
                "settled"
            }
        }
        Some(SettleState::Unilateral) => "settled",
        Some(SettleState::Disputed) => "disputed",
        Some(SettleState::Proposed) => "settling",
        None => match t.state {
            TradeState::MakerSigned => "maker_signed",
            TradeState::Agreed if now < t.slot_ms => "agreed",
            TradeState::Agreed if now < t.slot_ms.saturating_add(slot_len_ms) => "delivering",
            TradeState::Agreed => "awaiting",
        },
    }
}

/// A bad query, for a 400 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadQuery(pub String);

/// The page of `list` that `q` asks for. `name` gives a trade's neighbour's chosen name (for
/// the `who` filter); `slot_len_ms` and `now` decide where unsettled trades stand.
pub fn page(
    list: Vec<TradeView>,
    q: &TradeQuery,
    slot_len_ms: u64,
    now: u64,
    name: impl Fn(&TradeView) -> String,
) -> Result<Page<TradeView>, BadQuery> {
    let bad = |m: String| Err(BadQuery(m));
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return bad(format!("limit must be 1 to {MAX_LIMIT}"));
    }
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => match Key::decode(c) {
            Some(k) => Some(k),
            None => {
                return bad(
                    "cursor is not one this node gave out (use next_cursor from the page before)"
                        .into(),
                );
            }
        },
    };
    let status = q.status.as_deref().filter(|s| !s.is_empty());
    if let Some(s) = status.filter(|s| !STATUS_FILTERS.contains(s)) {
        return bad(format!(
            "status {s:?}: use one of {}",
            STATUS_FILTERS.join(", ")
        ));
    }
    let side = q.side.as_deref().filter(|s| !s.is_empty());
    if let Some(s) = side.filter(|s| *s != "sell" && *s != "buy") {
        return bad(format!("side {s:?}: use sell or buy"));
    }
    let who = q.who.as_deref().unwrap_or("").trim().to_lowercase();
    if who.len() > 64 {
        return bad("who is at most 64 bytes".into());
    }
    if q.from.zip(q.to).is_some_and(|(f, t)| f >= t) {
        return bad("from must be before to".into());
    }
    let matches = |t: &TradeView| {
        status.is_none_or(|s| match s {
            "standing" => t.from_agreement,
            "dispute" => t.dispute.is_some(),
            s => status_key(t, slot_len_ms, now) == s,
        }) && side.is_none_or(|s| t.side == s)
            && q.from.is_none_or(|f| t.slot_ms >= f)
            && q.to.is_none_or(|to| t.slot_ms < to)
            && (who.is_empty()
                || name(t).to_lowercase().contains(&who)
                || t.counterparty.to_lowercase().contains(&who)
                || t.counterparty_id.to_lowercase().contains(&who))
    };
    let mut kept: Vec<(Key, TradeView)> = list
        .into_iter()
        .filter(|t| matches(t))
        .map(|t| (Key::of(&t), t))
        .collect();
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    let total = kept.len();
    let start = match &after {
        Some(k) => kept.partition_point(|(key, _)| key <= k),
        None => 0,
    };
    let rest = kept.len() - start;
    let trades: Vec<(Key, TradeView)> = kept.into_iter().skip(start).take(limit).collect();
    let next_cursor = (rest > limit)
        .then(|| trades.last().map(|(k, _)| k.encode()))
        .flatten();
    Ok(Page {
        trades: trades.into_iter().map(|(_, t)| t).collect(),
        next_cursor,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::{SettleState, TradeState};

    fn trade(slot_ms: u64, nonce: u64, side: &'static str) -> TradeView {
        TradeView {
            taker: format!("{:064x}", nonce % 3),
            nonce,
            role: "taker",
            side,
            counterparty: format!("c{:03}", nonce % 5),
            counterparty_id: format!("{:064x}", 100 + nonce % 5),
            slot_ms,
            energy_wh: 100,
            price: 9_000,
            state: TradeState::Agreed,
            settlement: None,
            delivered_wh: None,
            amount: None,
            signatures_verified: true,
            from_agreement: nonce % 4 == 0,
            dispute: None,
            offer_maker: String::new(),
            offer_nonce: 0,
        }
    }

    fn history() -> Vec<TradeView> {
        // Several trades per slot, so ties in the slot are broken by taker and nonce.
        (0..240)
            .map(|n| trade(1_000 * (n / 3), n, if n % 2 == 0 { "sell" } else { "buy" }))
            .collect()
    }

    fn all_pages(q: TradeQuery) -> Vec<Page<TradeView>> {
        let mut q = q;
        let mut pages = Vec::new();
        loop {
            let p = page(history(), &q, 900, 0, |_| String::new()).unwrap();
            let next = p.next_cursor.clone();
            pages.push(p);
            match next {
                Some(c) => q.cursor = Some(c),
                None => return pages,
            }
        }
    }

    #[test]
    fn pages_cover_the_history_once_in_order() {
        let pages = all_pages(TradeQuery {
            limit: Some(50),
            ..TradeQuery::default()
        });
        assert_eq!(pages.len(), 5, "240 trades, 50 a page");
        assert!(pages[..4].iter().all(|p| p.trades.len() == 50));
        assert_eq!(pages[4].trades.len(), 40);
        assert!(pages.iter().all(|p| p.total == 240));
        let seen: Vec<(u64, u64)> = pages
            .iter()
            .flat_map(|p| p.trades.iter().map(|t| (t.slot_ms, t.nonce)))
            .collect();
        let mut expect = history();
        expect.sort_by_key(|t| (Reverse(t.slot_ms), t.taker.clone(), t.nonce));
        assert_eq!(
            seen,
            expect
                .iter()
                .map(|t| (t.slot_ms, t.nonce))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_cursor_still_holds_when_newer_trades_arrive() {
        let q = TradeQuery {
            limit: Some(10),
            ..TradeQuery::default()
        };
        let first = page(history(), &q, 900, 0, |_| String::new()).unwrap();
        let mut grown = history();
        grown.push(trade(10_000_000, 999, "sell"));
        let q2 = TradeQuery {
            cursor: first.next_cursor.clone(),
            ..q.clone()
        };
        let second = page(grown, &q2, 900, 0, |_| String::new()).unwrap();
        let plain = page(
            history(),
            &TradeQuery {
                limit: Some(20),
                ..TradeQuery::default()
            },
            900,
            0,
            |_| String::new(),
        )
        .unwrap();
        assert_eq!(
            second.trades.iter().map(|t| t.nonce).collect::<Vec<_>>(),
            plain.trades[10..]
                .iter()
                .map(|t| t.nonce)
                .collect::<Vec<_>>()
        );
        assert_eq!(second.total, 241);
    }

    #[test]
    fn filters_apply_before_paging() {
        let pages = all_pages(TradeQuery {
            limit: Some(7),
            side: Some("sell".into()),
            status: Some("standing".into()),
            from: Some(10_000),
            to: Some(60_000),
            ..TradeQuery::default()
        });
        let got: Vec<&TradeView> = pages.iter().flat_map(|p| &p.trades).collect();
        let expect = history()
            .into_iter()
            .filter(|t| {
                t.side == "sell" && t.from_agreement && t.slot_ms >= 10_000 && t.slot_ms < 60_000
            })
            .count();
        assert!(expect > 7, "more than one page");
        assert_eq!(got.len(), expect);
        assert!(pages.iter().all(|p| p.total == expect));
        assert!(
            got.iter()
                .all(|t| t.side == "sell" && t.from_agreement && t.slot_ms >= 10_000)
        );
        // Text matches the chosen name as well as the ids.
        let p = page(
            history(),
            &TradeQuery {
                who: Some("ALICE".into()),
                ..TradeQuery::default()
            },
            900,
            0,
            |t| {
                if t.nonce == 7 {
                    "Alice".into()
                } else {
                    "Bob".into()
                }
            },
        )
        .unwrap();
        assert_eq!(p.trades.len(), 1);
        assert_eq!(p.trades[0].nonce, 7);
    }

    #[test]
    fn statuses_follow_the_slot_and_the_settlement() {
        let mut t = trade(10_000, 1, "sell");
        assert_eq!(status_key(&t, 900, 9_999), "agreed");
        assert_eq!(status_key(&t, 900, 10_000), "delivering");
        assert_eq!(status_key(&t, 900, 10_900), "awaiting");
        t.settlement = Some(SettleState::Proposed);
        assert_eq!(status_key(&t, 900, 20_000), "settling");
        t.settlement = Some(SettleState::Settled);
        t.delivered_wh = Some(100);
        assert_eq!(status_key(&t, 900, 20_000), "settled");
        t.delivered_wh = Some(60);
        assert_eq!(status_key(&t, 900, 20_000), "short");
        t.settlement = Some(SettleState::Disputed);
        assert_eq!(status_key(&t, 900, 20_000), "disputed");
        let filtered = page(
            vec![t.clone(), trade(5, 2, "buy")],
            &TradeQuery {
                status: Some("disputed".into()),
                ..TradeQuery::default()
            },
            900,
            20_000,
            |_| String::new(),
        )
        .unwrap();
        assert_eq!(filtered.trades.len(), 1);
        assert_eq!(filtered.trades[0].nonce, 1);
    }

    #[test]
    fn bad_queries_are_refused_with_a_reason() {
        let cases = [
            (
                TradeQuery {
                    limit: Some(0),
                    ..TradeQuery::default()
                },
                "limit",
            ),
            (
                TradeQuery {
                    limit: Some(MAX_LIMIT + 1),
                    ..TradeQuery::default()
                },
                "limit",
            ),
            (
                TradeQuery {
                    cursor: Some("yesterday".into()),
                    ..TradeQuery::default()
                },
                "cursor",
            ),
            (
                TradeQuery {
                    cursor: Some(format!("1-{}-2-3", "a".repeat(64))),
                    ..TradeQuery::default()
                },
                "cursor",
            ),
            (
                TradeQuery {
                    status: Some("lost".into()),
                    ..TradeQuery::default()
                },
                "status",
            ),
            (
                TradeQuery {
                    side: Some("sideways".into()),
                    ..TradeQuery::default()
                },
                "side",
            ),
            (
                TradeQuery {
                    from: Some(5),
                    to: Some(5),
                    ..TradeQuery::default()
                },
                "from",
            ),
            (
                TradeQuery {
                    who: Some("x".repeat(65)),
                    ..TradeQuery::default()
                },
                "who",
            ),
        ];
        for (q, word) in cases {
            let e = page(history(), &q, 900, 0, |_| String::new()).unwrap_err();
            assert!(e.0.contains(word), "{q:?}: {}", e.0);
        }
        // An empty history is one empty page.
        let p = page(vec![], &TradeQuery::default(), 900, 0, |_| String::new()).unwrap();
        assert!(p.trades.is_empty() && p.next_cursor.is_none() && p.total == 0);
    }
}
