//! A deterministic simulation harness: many nodes in one process running the real market core
//! with the real encoding and signatures, on a seeded scheduler, with message loss,
//! duplication, reordering, delay, partitions and crash-restarts that keep only what was
//! persisted. After every run it checks the market's invariants. A failing seed replays
//! exactly.

use super::{Input, Market, Output, Record, SettleState, TradeState};
use crate::net::behaviour::TopicKind;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use wattmesh_protocol::attestation::{MeterAttestation, MeterStatus};
use wattmesh_protocol::charter::{Charter, CharterChain, SignedCharter};
use wattmesh_protocol::envelope::Envelope;
use wattmesh_protocol::merkle;
use wattmesh_protocol::offer::{OfferId, Side};
use wattmesh_protocol::trade::{TradeId, TradeRequest, TradeResponse};
use wattmesh_protocol::units::cost;
use wattmesh_protocol::validate::{self, Msg};
use wattmesh_protocol::{Hash32, NeighbourhoodId, NodeId, NodeKey, Settlement, Trade, slot};

/// SplitMix64: small, seedable, and the same on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `ppm / 1 000 000`.
    pub fn chance_ppm(&mut self, ppm: u64) -> bool {
        self.next_u64() % 1_000_000 < ppm
    }

    /// True with probability `p_permille / 1000`.
    pub fn chance(&mut self, p_permille: u64) -> bool {
        self.next_u64() % 1000 < p_permille
    }
}

/// The faults and size of one run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Homes.
    pub nodes: usize,
    /// Delivery slots traded.
    pub slots: u64,
    /// Message loss, per mille.
    pub loss_permille: u64,
    /// Message duplication, per mille.
    pub dup_permille: u64,
    /// Largest one-way delay, ms (delays are uniform from 1 ms, so messages reorder).
    pub max_delay_ms: u64,
    /// Chance per node per second of crashing, per million; a crash right after a durable
    /// write, before the rest of that step's work, has a quarter of this chance per write.
    pub crash_per_million: u64,
    /// Whether a partition cuts the homes in two for a while.
    pub partition: bool,
    /// Run the deliberately broken build (no reservation).
    pub break_reservation: bool,
    /// Homes trade with the automatic trader (limits and forecasts drawn per home and slot);
    /// otherwise owners post and take at random (more collisions on the same offer).
    pub traders: bool,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            nodes: 12,
            slots: 6,
            loss_permille: 20,
            dup_permille: 20,
            max_delay_ms: 300,
            crash_per_million: 200,
            partition: true,
            break_reservation: false,
            traders: true,
        }
    }
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Agreed trades (distinct).
    pub trades: usize,
    /// Trades settled by both sides.
    pub settled: usize,
    /// Trades disputed or settled unilaterally on some side.
    pub disputed: usize,
    /// Crashes injected.
    pub crashes: usize,
    /// Messages dropped.
    pub dropped: usize,
    /// Broken invariants, each described.
    pub violations: Vec<String>,
    /// Every owner's limit order (node, slot, side, price, quantity), for efficiency.
    pub orders: Vec<(usize, u64, Side, u64, u64)>,
    /// Every agreed trade (slot, seller, buyer, energy, price).
    pub trades_list: Vec<(u64, usize, usize, u64, u64)>,
    /// Actions the automatic traders took.
    pub trader_actions: usize,
    /// Gains from trade realised (Σ over trades of buyer's limit − seller's limit, × energy),
    /// in milli-minor units.
    pub gains_realised: u64,
    /// Gains a central uniform-price clearing of the same limit orders would realise.
    pub gains_central: u64,
    /// Why trades were disputed, with counts.
    pub dispute_reasons: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Tick(usize),
    Gossip {
        to: usize,
        bytes: Vec<u8>,
    },
    AttGossip {
        to: usize,
        bytes: Vec<u8>,
    },
    Request {
        from: usize,
        to: usize,
        token: u64,
        req_bytes: Vec<u8>,
    },
    Reply {
        to: usize,
        token: u64,
        resp_bytes: Vec<u8>,
    },
    Timeout {
        to: usize,
        token: u64,
    },
    Owner(usize),
    Trader(usize),
    Attest {
        node: usize,
        slot_ms: u64,
    },
    Restart(usize),
}

struct Node {
    key: Arc<NodeKey>,
    market: Market,
    persisted: Vec<Record>,
    attestations: Vec<Vec<u8>>,
    up: bool,
    /// Tokens of our requests still awaiting an answer (after a crash, none).
    waiting: HashSet<u64>,
    /// Attestation chain: last seq and hash.
    chain: Option<(u64, Hash32)>,
    registers: (u64, u64),
    next_cmd: u64,
    limits: super::trader::Limits,
    /// Expected net export per slot.
    forecast: BTreeMap<u64, i64>,
}

/// The harness's neighbourhood charter: 5-minute slots, a short grace.
pub fn charter(admin: &NodeKey) -> CharterChain {
    let mut c = Charter::founding(NeighbourhoodId([7; 16]), "Harness Lane", admin.node_id(), 0);
    c.slot_minutes = 5;
    c.gate_closure_secs = 30;
    c.settlement_grace_secs = 30;
    let signed = SignedCharter::found(c, admin).expect("valid harness charter");
    CharterChain::new(signed).expect("founding charter")
}

const START_MS: u64 = 1_782_043_200_000;
const TIMEOUT_MS: u64 = 2_000;

struct Sim {
    rng: Rng,
    sc: Scenario,
    chain: CharterChain,
    nodes: Vec<Node>,
    ids: HashMap<NodeId, usize>,
    queue: BinaryHeap<std::cmp::Reverse<(u64, u64, Ev)>>,
    seq: u64,
    now: u64,
    report: Report,
    partition: Option<(u64, u64)>,
    /// Each node's export per slot (what its meter saw), for the energy invariant.
    exports: HashMap<(usize, u64), u64>,
}

impl Sim {
    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(std::cmp::Reverse((t, self.seq, ev)));
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        match self.partition {
            Some((from, to)) if self.now >= from && self.now < to => {
                (a < self.sc.nodes / 2) != (b < self.sc.nodes / 2)
            }
            _ => false,
        }
    }

    /// Schedules a message with loss, duplication and delay.
    fn send(&mut self, from: usize, to: usize, make: impl Fn() -> Ev) {
        if self.cut(from, to) || self.rng.chance(self.sc.loss_permille) {
            self.report.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.sc.dup_permille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let d = self.rng.range(1, self.sc.max_delay_ms);
            let t = self.now + d;
            self.at(t, make());
        }
    }

    fn run_outputs(&mut self, n: usize, outs: Vec<Output>) {
        let total = outs.len();
        for (i, o) in outs.into_iter().enumerate() {
            if !self.nodes[n].up {
                return;
            }
            match o {
                Output::Persist(r) => {
                    self.nodes[n].persisted.push(r);
                    // A crash right after a durable write, before the rest is done.
                    if i + 1 < total && self.rng.chance_ppm(self.sc.crash_per_million / 4) {
                        self.crash(n);
                        return;
                    }
                }
                Output::Publish(TopicKind::Offers, bytes) => {
                    for to in 0..self.nodes.len() {
                        if to != n {
                            let b = bytes.clone();
                            self.send(n, to, || Ev::Gossip {
                                to,
                                bytes: b.clone(),
                            });
                        }
                    }
                }
                Output::Publish(TopicKind::Attestations | TopicKind::Members, _) => {}
                Output::Send { to, token, req } => {
                    let Some(&dest) = self.ids.get(&to) else {
                        continue;
                    };
                    self.nodes[n].waiting.insert(token);
                    let req_bytes = wattmesh_protocol::codec::encode(&req);
                    self.send(n, dest, || Ev::Request {
                        from: n,
                        to: dest,
                        token,
                        req_bytes: req_bytes.clone(),
                    });
                    let t = self.now + TIMEOUT_MS;
                    self.at(t, Ev::Timeout { to: n, token });
                }
                Output::Reply { reply, resp } => {
                    // The reply id encodes the requester and its token.
                    let (to, token) = ((reply >> 48) as usize, reply & 0xffff_ffff_ffff);
                    let resp_bytes = wattmesh_protocol::codec::encode(&resp);
                    self.send(n, to, || Ev::Reply {
                        to,
                        token,
                        resp_bytes: resp_bytes.clone(),
                    });
                }
                Output::Done { .. } => {}
                Output::Traded(a) if a.acts() => self.report.trader_actions += 1,
                Output::Traded(_) => {}
            }
        }
    }

    fn crash(&mut self, n: usize) {
        self.nodes[n].up = false;
        self.nodes[n].waiting.clear();
        self.report.crashes += 1;
        let back = self.now + self.rng.range(1_000, 40_000);
        self.at(back, Ev::Restart(n));
    }

    fn input(&mut self, n: usize, input: Input) {
        if !self.nodes[n].up {
            return;
        }
        let outs = self.nodes[n].market.handle(self.now, true, input);
        self.run_outputs(n, outs);
    }

    fn owner(&mut self, n: usize) {
        let c = self.chain.latest().charter.clone();
        let slot_ms = slot::first_open_slot(&c, self.now);
        if slot_ms >= START_MS + self.sc.slots * c.slot_ms() {
            return;
        }
        let cmd = self.nodes[n].next_cmd;
        self.nodes[n].next_cmd += 1;
        let me = self.nodes[n].key.node_id();
        // Half the time take an offer from the book, else post one.
        let book: Vec<_> = self.nodes[n]
            .market
            .book
            .sorted_from(slot_ms)
            .into_iter()
            .filter(|e| e.offer.maker != me && e.offer.quantity_wh > 0)
            .map(|e| {
                (
                    e.offer.id(),
                    e.offer.quantity_wh,
                    e.offer.slot_ms,
                    e.offer.side,
                    e.offer.price,
                )
            })
            .collect();
        if !book.is_empty() && self.rng.chance(500) {
            let (id, q, s, side, price) = book[self.rng.range(0, book.len() as u64 - 1) as usize];
            let want = self.rng.range(1, q.clamp(1, 800));
            self.report
                .orders
                .push((n, s, side.opposite(), price, want));
            let nonce = self.rng.next_u64();
            self.input(
                n,
                Input::Take {
                    cmd,
                    offer: id,
                    energy_wh: want,
                    nonce,
                },
            );
        } else {
            let side = if self.rng.chance(550) {
                Side::Sell
            } else {
                Side::Buy
            };
            let quantity_wh = self.rng.range(100, 1_500);
            let price = self.rng.range(c.feed_in_price, c.retail_price);
            self.report
                .orders
                .push((n, slot_ms, side, price, quantity_wh));
            let nonce = self.rng.next_u64();
            let min_fill_wh = self.rng.range(1, 100);
            self.input(
                n,
                Input::Post {
                    cmd,
                    side,
                    quantity_wh,
                    price,
                    slot_ms,
                    min_fill_wh,
                    nonce,
                },
            );
        }
    }

    fn attest(&mut self, n: usize, slot_ms: u64) {
        if !self.nodes[n].up {
            // Missed: the node will not attest this slot (coverage gap).
            return;
        }
        let me = self.nodes[n].key.node_id();
        let trades: Vec<Trade> = self.nodes[n]
            .market
            .trades()
            .filter(|t| t.state == TradeState::Agreed && t.trade.slot_ms == slot_ms)
            .map(|t| t.trade.clone())
            .collect();
        let sold: Vec<_> = trades
            .iter()
            .filter(|t| t.seller() == me)
            .map(|t| (t.id(), t.energy_wh))
            .collect();
        let bought: Vec<_> = trades
            .iter()
            .filter(|t| t.buyer() == me)
            .map(|t| (t.id(), t.energy_wh))
            .collect();
        let sold_root = merkle::root(&sold).expect("small sums");
        // The meter: sellers export between 60 % and 110 % of what they sold.
        let (export, import) = if self.sc.traders {
            // The meter sees roughly what was forecast, sometimes less (a cloud).
            let f = self.nodes[n].forecast.get(&slot_ms).copied().unwrap_or(0);
            let k = if self.rng.chance(250) {
                self.rng.range(50, 100)
            } else {
                100
            };
            (
                f.max(0) as u64 * k / 100,
                f.min(0).unsigned_abs() + self.rng.range(0, 100),
            )
        } else {
            // Sellers export between 60 % and 110 % of what they sold.
            (
                sold_root.sum * self.rng.range(60, 110) / 100 + self.rng.range(0, 50),
                merkle::root(&bought).expect("small").sum + self.rng.range(0, 300),
            )
        };
        let c = self.chain.latest().charter.clone();
        let export = export.min(c.max_energy_per_slot_wh());
        let import = import.min(c.max_energy_per_slot_wh());
        let node = &mut self.nodes[n];
        let (seq, prev) = match node.chain {
            Some((s, h)) => (s + 1, h),
            None => (0, Hash32::ZERO),
        };
        node.registers.0 += import;
        node.registers.1 += export;
        // Registers grow by more than the deltas across a gap; keep adjacency simple by
        // attesting every slot (missed ones are skipped above, which the chain allows).
        let a = MeterAttestation {
            node: me,
            seq,
            prev,
            slot_ms,
            import_register_wh: node.registers.0,
            export_register_wh: node.registers.1,
            import_wh: import,
            export_wh: export,
            coverage_permille: 1000,
            status: MeterStatus::Simulated,
            sold: sold_root,
            bought: merkle::root(&bought).expect("small"),
            created_ms: self.now,
            ext: Vec::new(),
        };
        let env = Envelope::seal(&a, self.chain.at(self.now).hash, &node.key);
        let bytes = env.to_bytes();
        node.chain = Some((
            seq,
            wattmesh_protocol::attestation::chain_hash(&env.payload),
        ));
        node.attestations.push(bytes.clone());
        self.exports.insert((n, slot_ms), export);
        self.input(n, Input::Attestation(a, bytes.clone()));
        for to in 0..self.nodes.len() {
            if to != n {
                let b = bytes.clone();
                self.send(n, to, || Ev::AttGossip {
                    to,
                    bytes: b.clone(),
                });
            }
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Tick(n) => {
                if self.nodes[n].up {
                    self.input(n, Input::Tick);
                    // A crash, now and then.
                    if self.now < self.quiet_from()
                        && self.rng.chance_ppm(self.sc.crash_per_million)
                    {
                        self.crash(n);
                    }
                }
                let t = self.now + 1_000;
                self.at(t, Ev::Tick(n));
            }
            Ev::Gossip { to, bytes } => {
                if !self.nodes[to].up {
                    return;
                }
                if let Ok(acc) = validate::validate_archival(&bytes, &self.chain, false) {
                    if let Msg::Offer(o) = acc.msg {
                        self.input(to, Input::Offer(o, bytes));
                    }
                }
            }
            Ev::AttGossip { to, bytes } => {
                if self.nodes[to].up {
                    if let Ok(acc) = validate::validate_archival(&bytes, &self.chain, false) {
                        if let Msg::Attestation(a) = acc.msg {
                            self.input(to, Input::Attestation(a, bytes));
                        }
                    }
                }
            }
            Ev::Request {
                from,
                to,
                token,
                req_bytes,
            } => {
                if !self.nodes[to].up {
                    return;
                }
                let Ok(req) = wattmesh_protocol::codec::decode_canonical::<TradeRequest>(
                    &req_bytes,
                    usize::MAX,
                ) else {
                    self.report
                        .violations
                        .push("a request did not decode".into());
                    return;
                };
                let from_id = self.nodes[from].key.node_id();
                let reply = ((from as u64) << 48) | token;
                self.input(
                    to,
                    Input::Request {
                        from: from_id,
                        req,
                        reply,
                    },
                );
            }
            Ev::Reply {
                to,
                token,
                resp_bytes,
            } => {
                if !self.nodes[to].up || !self.nodes[to].waiting.remove(&token) {
                    return;
                }
                let resp = wattmesh_protocol::codec::decode_canonical::<TradeResponse>(
                    &resp_bytes,
                    usize::MAX,
                )
                .ok();
                self.input(to, Input::Response { token, resp });
            }
            Ev::Timeout { to, token } => {
                if self.nodes[to].up && self.nodes[to].waiting.remove(&token) {
                    self.input(to, Input::Response { token, resp: None });
                }
            }
            Ev::Owner(n) => {
                if self.nodes[n].up {
                    self.owner(n);
                }
                let t = self.now + self.rng.range(5_000, 30_000);
                self.at(t, Ev::Owner(n));
            }
            Ev::Trader(n) => {
                if self.nodes[n].up && self.now < self.quiet_from() {
                    let input = Input::Trade {
                        limits: self.nodes[n].limits.clone(),
                        utc_offset_min: 0,
                        forecast: self.nodes[n]
                            .forecast
                            .iter()
                            .map(|(k, v)| (*k, *v))
                            .collect(),
                    };
                    self.input(n, input);
                }
                let t = self.now + 5_000;
                self.at(t, Ev::Trader(n));
            }
            Ev::Attest { node, slot_ms } => self.attest(node, slot_ms),
            Ev::Restart(n) => {
                let node = &mut self.nodes[n];
                node.market = Market::restore(
                    node.key.clone(),
                    self.chain.clone(),
                    &node.persisted,
                    &node.attestations,
                );
                node.market.break_reservation = self.sc.break_reservation;
                node.up = true;
            }
        }
    }

    fn quiet_from(&self) -> u64 {
        // Faults stop after the last slot's gate closes, so reconciliation and settlement can
        // complete before the run ends.
        let c = &self.chain.latest().charter;
        START_MS + self.sc.slots * c.slot_ms()
    }
}

/// Runs one seed.
pub fn run(seed: u64, sc: &Scenario) -> Report {
    let admin = NodeKey::from_secret(&[0xad; 32]);
    let chain = charter(&admin);
    let mut rng = Rng::new(seed);
    let nodes: Vec<Node> = (0..sc.nodes)
        .map(|_| {
            let mut secret = [0u8; 32];
            for c in secret.chunks_mut(8) {
                c.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            let key = Arc::new(NodeKey::from_secret(&secret));
            let mut market = Market::new(key.clone(), chain.clone());
            market.break_reservation = sc.break_reservation;
            Node {
                key,
                market,
                persisted: Vec::new(),
                attestations: Vec::new(),
                up: true,
                waiting: HashSet::new(),
                chain: None,
                registers: (10_000, 10_000),
                next_cmd: 1,
                limits: super::trader::Limits::default(),
                forecast: BTreeMap::new(),
            }
        })
        .collect();
    let ids = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.key.node_id(), i))
        .collect();
    let c = chain.latest().charter.clone();
    let mut sim = Sim {
        rng,
        sc: sc.clone(),
        chain,
        nodes,
        ids,
        queue: BinaryHeap::new(),
        seq: 0,
        now: START_MS - c.slot_ms(),
        report: Report::default(),
        partition: None,
        exports: HashMap::new(),
    };
    if sc.partition {
        let from = START_MS - c.slot_ms() / 2 + sim.rng.range(0, c.slot_ms());
        sim.partition = Some((from, from + sim.rng.range(30_000, 120_000)));
    }
    for n in 0..sc.nodes {
        let t = sim.now + sim.rng.range(0, 1_000);
        sim.at(t, Ev::Tick(n));
        let t = sim.now + sim.rng.range(0, 5_000);
        if sc.traders {
            // Each home has its own limits and, per slot, its own surplus or deficit.
            let lo = c.feed_in_price;
            let hi = c.retail_price;
            let floor = sim.rng.range(lo, lo + (hi - lo) * 7 / 10);
            let ceiling = sim.rng.range(lo + (hi - lo) * 3 / 10, hi);
            sim.nodes[n].limits = super::trader::Limits {
                enabled: true,
                min_sell_price: floor,
                max_buy_price: ceiling,
                sell_above_wh: 0,
                lead_slots: 2,
                ramp_minutes: 4,
                from_hour: 0,
                to_hour: 24,
                utc_offset_minutes: 0,
                ..super::trader::Limits::default()
            };
            for k in 0..sc.slots {
                let slot_ms = START_MS + k * c.slot_ms();
                let f = sim.rng.range(0, 1_600) as i64 - 800;
                sim.nodes[n].forecast.insert(slot_ms, f);
                let (side, price) = if f > 0 {
                    (Side::Sell, floor)
                } else {
                    (Side::Buy, ceiling)
                };
                sim.report
                    .orders
                    .push((n, slot_ms, side, price, f.unsigned_abs()));
            }
            sim.at(t, Ev::Trader(n));
        } else {
            sim.at(t, Ev::Owner(n));
        }
        for s in 0..sc.slots {
            let slot_ms = START_MS + s * c.slot_ms();
            let t = slot_ms + c.slot_ms() + sim.rng.range(1_000, 10_000);
            sim.at(t, Ev::Attest { node: n, slot_ms });
        }
    }
    // Long enough after the last slot for settlement, its deadline, and reconciliation.
    let end = START_MS
        + sc.slots * c.slot_ms()
        + (3 + super::RECONCILE_GRACES) * u64::from(c.settlement_grace_secs) * 1000;
    while let Some(std::cmp::Reverse((t, _, ev))) = sim.queue.pop() {
        if t > end {
            break;
        }
        sim.now = t;
        sim.step(ev);
    }
    // Bring everyone back for the final accounting.
    for n in 0..sim.nodes.len() {
        if !sim.nodes[n].up {
            sim.step(Ev::Restart(n));
        }
    }
    check(&mut sim);
    sim.report
}

/// One node's view of a trade's settlement: node, state, envelope.
type SettleView = (usize, SettleState, Option<Vec<u8>>);

fn check(sim: &mut Sim) {
    let c = sim.chain.latest().charter.clone();
    let idx = |id: &NodeId| sim.ids.get(id).copied().unwrap_or(usize::MAX);
    // Every agreed copy of every trade, from every node's durable records.
    let mut copies: BTreeMap<TradeId, Vec<(usize, TradeState, Vec<u8>)>> = BTreeMap::new();
    // Every version of every offer its maker persisted, to know how much it ever offered.
    let mut versions: HashMap<OfferId, BTreeMap<u32, u64>> = HashMap::new();
    let mut settlements: BTreeMap<TradeId, Vec<SettleView>> = BTreeMap::new();
    for (n, node) in sim.nodes.iter().enumerate() {
        for t in node.market.trades() {
            copies
                .entry(t.trade.id())
                .or_default()
                .push((n, t.state, t.envelope.clone()));
        }
        for r in &node.persisted {
            if let Record::Offer { envelope, .. } = r {
                if let Ok(o) = Envelope::from_bytes(envelope)
                    .and_then(|e| e.payload_as::<wattmesh_protocol::Offer>())
                {
                    if o.maker == node.market.me() {
                        versions
                            .entry(o.id())
                            .or_default()
                            .insert(o.version, o.quantity_wh);
                    }
                }
            }
        }
        for (id, s) in node.market.settlements() {
            settlements
                .entry(*id)
                .or_default()
                .push((n, s.state, s.envelope.clone()));
            if let Some(d) = &s.dispute {
                *sim.report.dispute_reasons.entry(d.clone()).or_default() += 1;
            }
        }
    }
    let mut sold_on: HashMap<OfferId, u64> = HashMap::new();
    let mut delivered_by: HashMap<(usize, u64), u64> = HashMap::new();
    for (id, cs) in &copies {
        let agreed: Vec<_> = cs
            .iter()
            .filter(|(_, s, _)| *s == TradeState::Agreed)
            .collect();
        if agreed.is_empty() {
            continue; // maker-signed only: never agreed
        }
        let t: Trade = Envelope::from_bytes(&agreed[0].2)
            .and_then(|e| e.payload_as())
            .expect("stored trade decodes");
        sim.report.trades += 1;
        sim.report.trades_list.push((
            t.slot_ms,
            idx(&t.seller()),
            idx(&t.buyer()),
            t.energy_wh,
            t.price,
        ));
        *sold_on.entry(t.offer).or_default() += t.energy_wh;
        if t.price < c.feed_in_price || t.price > c.retail_price {
            sim.report
                .violations
                .push(format!("trade {id:?} priced outside the band"));
        }
        // Both parties hold it agreed, byte for byte.
        let parties = [idx(&t.maker()), idx(&t.taker)];
        for p in parties {
            match cs.iter().find(|(n, _, _)| *n == p) {
                Some((_, TradeState::Agreed, b)) if *b == agreed[0].2 => {}
                other => sim.report.violations.push(format!(
                    "trade {id:?}: copies differ (node {p} holds {:?})",
                    other.map(|(_, s, _)| s)
                )),
            }
        }
        // Settled or disputed exactly once on each side; when both settled, identically.
        let ss = settlements.get(id).cloned().unwrap_or_default();
        let mut states = Vec::new();
        for p in parties {
            match ss.iter().find(|(n, _, _)| *n == p) {
                Some((_, SettleState::Proposed, _)) | None => sim.report.violations.push(format!(
                    "trade {id:?}: node {p} never settled or disputed it"
                )),
                Some((_, s, e)) => states.push((*s, e.clone())),
            }
        }
        if states.len() == 2 && states.iter().all(|(s, _)| *s == SettleState::Settled) {
            if states[0].1 != states[1].1 {
                sim.report
                    .violations
                    .push(format!("trade {id:?}: the two settlements differ"));
            }
            let s: Settlement = states[0]
                .1
                .as_ref()
                .and_then(|b| Envelope::from_bytes(b).ok()?.payload_as().ok())
                .expect("settled record decodes");
            if s.amount != cost(s.delivered_wh, s.price) || s.delivered_wh > s.agreed_wh {
                sim.report
                    .violations
                    .push(format!("trade {id:?}: settlement figures wrong"));
            }
            *delivered_by.entry((idx(&s.seller), s.slot_ms)).or_default() += s.delivered_wh;
            sim.report.settled += 1;
        } else if !states.is_empty() {
            sim.report.disputed += 1;
        }
    }
    // What a maker offered on an offer in all: the first version's quantity plus every
    // increase a later version made (the trader resizes its offer up when its forecast grows);
    // a fill lowers the quantity by what it sold, so selling more than this means a fill was
    // accepted beyond what remained.
    let offered: HashMap<OfferId, u64> = versions
        .iter()
        .map(|(id, vs)| {
            let mut total = 0;
            let mut prev = 0;
            for &q in vs.values() {
                total += q.saturating_sub(prev);
                prev = q;
            }
            (*id, total)
        })
        .collect();
    for (offer, sold) in &sold_on {
        if let Some(&q) = offered.get(offer) {
            if *sold > q {
                sim.report
                    .violations
                    .push(format!("offer {offer:?} oversold: {sold} of {q} Wh"));
            }
        }
    }
    for ((n, slot_ms), d) in &delivered_by {
        let exported = sim.exports.get(&(*n, *slot_ms)).copied().unwrap_or(0);
        if *d > exported {
            sim.report.violations.push(format!(
                "node {n} credited with {d} Wh in slot {slot_ms} but exported {exported}"
            ));
        }
    }
    if sim.sc.traders {
        // The traders stay inside their owners' limits: no home sells or buys more in a slot
        // than its forecast allows, or at a price beyond its floor or ceiling.
        let mut per: HashMap<(usize, u64, Side), u64> = HashMap::new();
        for &(slot_ms, seller, buyer, energy, price) in &sim.report.trades_list {
            *per.entry((seller, slot_ms, Side::Sell)).or_default() += energy;
            *per.entry((buyer, slot_ms, Side::Buy)).or_default() += energy;
            if let Some(node) = sim.nodes.get(seller) {
                if price < node.limits.min_sell_price {
                    sim.report
                        .violations
                        .push(format!("node {seller} sold below its floor at {price}"));
                }
            }
            if let Some(node) = sim.nodes.get(buyer) {
                if price > node.limits.max_buy_price {
                    sim.report
                        .violations
                        .push(format!("node {buyer} bought above its ceiling at {price}"));
                }
            }
        }
        for ((n, slot_ms, side), q) in per {
            let f = sim.nodes[n].forecast.get(&slot_ms).copied().unwrap_or(0);
            let allowed = match side {
                Side::Sell => f.max(0) as u64,
                Side::Buy => f.min(0).unsigned_abs(),
            };
            if q > allowed {
                sim.report.violations.push(format!(
                    "node {n} traded {q} Wh on {side:?} in slot {slot_ms}, its limit is {allowed}"
                ));
            }
        }
        efficiency(&mut sim.report);
    }
    let balances: i128 = sim
        .nodes
        .iter()
        .flat_map(|n| n.market.balances().into_values())
        .sum();
    if balances != 0 {
        sim.report
            .violations
            .push(format!("the ledger sums to {balances}, not zero"));
    }
}

/// Gains from trade: realised by the agreed trades, and by a central uniform-price clearing of
/// the same limit orders, slot by slot.
fn efficiency(r: &mut Report) {
    let orders: Vec<super::clearing::Order> = r
        .orders
        .iter()
        .map(
            |&(home, slot_ms, side, limit_price, quantity_wh)| super::clearing::Order {
                home,
                slot_ms,
                side,
                limit_price,
                quantity_wh,
            },
        )
        .collect();
    let fills: Vec<super::clearing::Fill> = r
        .trades_list
        .iter()
        .map(
            |&(slot_ms, seller, buyer, energy_wh, _price)| super::clearing::Fill {
                slot_ms,
                seller,
                buyer,
                energy_wh,
            },
        )
        .collect();
    let g = super::clearing::gains(&orders, &fills);
    r.gains_realised = g.realised;
    r.gains_central = g.central;
}
