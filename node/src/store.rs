//! Durable storage in redb.
//!
//! Tables carry a version in their name (`offers_v1`); the schema version lives in `meta_v1`.
//! Signed messages are stored as their exact envelope bytes. Everything signed is committed
//! with `Durability::Immediate` before the node acts on it. All methods block: async code calls
//! them through `tokio::task::spawn_blocking`, never on the swarm task.
//!
//! Tables are added as the features that fill them land.

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wattmesh_protocol::offer::OfferId;

/// The schema this code writes. Bump it, and add a step to [`Store::migrate`], when a table's
/// layout changes.
pub const SCHEMA_VERSION: u32 = 2;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta_v1");
/// Charter envelopes by version.
const CHARTERS: TableDefinition<u32, &[u8]> = TableDefinition::new("charters_v1");
/// The latest known version of every offer, by the 40-byte offer id (maker ‖ nonce BE).
const OFFERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("offers_v1");
/// Trades this node is party to, by the 40-byte trade id (taker ‖ nonce BE); the value is a
/// state byte ([`TradeState`]) followed by the trade's envelope bytes.
const TRADES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("trades_v1");
/// Meter attestations, ours and peers', by node id ‖ sequence number (BE): envelope bytes.
const ATTESTATIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("attestations_v1");
/// Attestation commitments (privacy mode), ours and peers', keyed like `attestations_v1`:
/// envelope bytes. A node holding both for one sequence number holds a private attestation
/// (its `ext` says so) and shares it only as the sync rules allow.
const COMMITMENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("commitments_v1");
/// Per-minute readings by minute start (UTC ms): postcard of `metering::Minute`.
const READINGS: TableDefinition<u64, &[u8]> = TableDefinition::new("readings_v1");
/// The same readings summed per block of [`READING_BLOCK_MS`], by the block's start (UTC ms):
/// postcard of [`StoredBlock`]. Written in the same transaction as the minutes they sum, so
/// the charts over days read a row per block instead of a row per minute (schema 2).
const READING_BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("reading_blocks_v1");

/// The length of a block of `reading_blocks_v1`: 15 minutes, so that blocks line up with every
/// hour, with 15-minute slots, and with local days in every time zone (UTC offsets are whole
/// quarter hours).
pub const READING_BLOCK_MS: u64 = 15 * 60_000;
/// Settlements we are party to, by the 40-byte trade id: postcard of the state, the envelope
/// and the dispute reason.
const SETTLEMENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("settlements_v1");
/// Known addresses of peers, by peer id bytes; the value is a newline-separated list.
const PEERS: TableDefinition<&[u8], &str> = TableDefinition::new("peers_v1");
/// Membership records, by content id.
const ROSTER: TableDefinition<&[u8], &[u8]> = TableDefinition::new("roster_v1");
/// Network key rotations, by (epoch, part).
const REKEYS: TableDefinition<(u32, u8), &[u8]> = TableDefinition::new("rekeys_v1");
/// Web UI accounts, by user name (JSON: password hash and role).
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users_v1");
/// Energy registers that a meter source counts itself (the current clamps), by
/// `source/channel`: postcard of `meter::registers::SavedChannel`. See `meter::registers`.
const REGISTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("registers_v1");
/// Tickets this node issued as an admin, by ticket id.
const TICKETS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tickets_v1");
/// Two-party documents (standing agreements, payments), by document hash: a state byte
/// ([`DocState`]) followed by the envelope bytes.
const DOCUMENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("documents_v1");
/// Dispute notes, by trade id (40 bytes) ‖ note hash (32 bytes): envelope bytes.
const NOTES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("notes_v1");

/// One envelope of a node's chain to store: the node, the sequence number, the bytes.
pub type ChainItem = (wattmesh_protocol::NodeId, u64, Vec<u8>);

/// What the store holds for one sequence number of a node's chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainEntry {
    /// The sequence number.
    pub seq: u64,
    /// The attestation's envelope bytes, if held.
    pub attestation: Option<Vec<u8>>,
    /// The commitment's envelope bytes, if held.
    pub commitment: Option<Vec<u8>>,
}

impl ChainEntry {
    fn new(seq: u64) -> ChainEntry {
        ChainEntry {
            seq,
            ..ChainEntry::default()
        }
    }
}

/// A remembered peer: its id bytes and addresses.
pub type KnownPeer = (Vec<u8>, Vec<String>);

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error(
        "cannot open the database {path}: {source}. If it is corrupt, move it aside and restart: \
         the node recovers its offers and trades from its neighbours"
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// The error.
        source: redb::DatabaseError,
    },
    /// Written by a newer version.
    #[error(
        "the database {path} was written by a newer wattmesh (schema {found}; this version reads \
         up to {SCHEMA_VERSION}). Upgrade wattmesh, or restore the database from a backup"
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// The schema found.
        found: u32,
    },
    /// Any other database error.
    #[error("database: {0}")]
    Db(#[from] redb::Error),
}

macro_rules! impl_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
impl_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

pub use crate::market::{DocState, Record, SettleState, TradeState};
use crate::metering::{Minute, MinuteSum};
use wattmesh_protocol::Hash32;
use wattmesh_protocol::envelope::Envelope;
use wattmesh_protocol::ledger::document_hash;

fn trade_state_byte(s: TradeState) -> u8 {
    match s {
        TradeState::MakerSigned => 1,
        TradeState::Agreed => 2,
    }
}

fn doc_state_byte(s: DocState) -> u8 {
    match s {
        DocState::Proposed => 1,
        DocState::Offered => 2,
        DocState::Signed => 3,
        DocState::Declined => 4,
        DocState::Withdrawn => 5,
    }
}

fn doc_state_from(b: u8) -> Option<DocState> {
    Some(match b {
        1 => DocState::Proposed,
        2 => DocState::Offered,
        3 => DocState::Signed,
        4 => DocState::Declined,
        5 => DocState::Withdrawn,
        _ => return None,
    })
}

fn trade_state_from(b: u8) -> Option<TradeState> {
    match b {
        1 => Some(TradeState::MakerSigned),
        2 => Some(TradeState::Agreed),
        _ => None,
    }
}

/// A block of readings as stored (its start is the key).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredBlock {
    minutes: u32,
    grid_w: i64,
    load_w: i64,
    solar_w: i64,
    battery_w: i64,
    import_wh: u64,
    export_wh: u64,
}

impl StoredBlock {
    fn of(s: &MinuteSum) -> StoredBlock {
        StoredBlock {
            minutes: s.minutes,
            grid_w: s.grid_w,
            load_w: s.load_w,
            solar_w: s.solar_w,
            battery_w: s.battery_w,
            import_wh: s.import_wh,
            export_wh: s.export_wh,
        }
    }

    fn sum(&self, start_ms: u64) -> MinuteSum {
        MinuteSum {
            start_ms,
            minutes: self.minutes,
            grid_w: self.grid_w,
            load_w: self.load_w,
            solar_w: self.solar_w,
            battery_w: self.battery_w,
            import_wh: self.import_wh,
            export_wh: self.export_wh,
        }
    }
}

fn block_of(minute_ms: u64) -> u64 {
    minute_ms - minute_ms % READING_BLOCK_MS
}

/// Recomputes the stored sums of the blocks starting at `blocks` from the minutes stored in
/// them (a block with no minute left is removed). Rows that do not decode are left out, as
/// they are when minutes are read.
fn rebuild_blocks(
    tx: &redb::WriteTransaction,
    blocks: impl IntoIterator<Item = u64>,
) -> Result<(), StoreError> {
    let minutes = tx.open_table(READINGS)?;
    let mut t = tx.open_table(READING_BLOCKS)?;
    for b in blocks {
        let mut sum = MinuteSum::default();
        for row in minutes.range(b..b + READING_BLOCK_MS)? {
            if let Ok(m) = postcard::from_bytes::<Minute>(row?.1.value()) {
                sum.add(&m);
            }
        }
        if sum.minutes == 0 {
            t.remove(b)?;
        } else {
            let bytes = postcard::to_stdvec(&StoredBlock::of(&sum)).map_err(|e| {
                StoreError::Db(redb::Error::Corrupted(format!("encoding a block: {e}")))
            })?;
            t.insert(b, bytes.as_slice())?;
        }
    }
    Ok(())
}

/// A settlement as stored.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSettlement {
    state: SettleState,
    envelope: Option<Vec<u8>>,
    dispute: Option<String>,
}

/// The node's database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: Arc<Database>,
}

/// The 40-byte key of an offer.
pub fn offer_key(id: &OfferId) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&id.maker.0);
    k[32..].copy_from_slice(&id.nonce.to_be_bytes());
    k
}

impl Store {
    /// Opens (or creates) the database at `path`, checking and migrating its schema.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.to_owned(),
                source: e.into(),
            })?;
        }
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        let store = Store { db: Arc::new(db) };
        store.migrate(path)?;
        Ok(store)
    }

    fn migrate(&self, path: &Path) -> Result<(), StoreError> {
        let found = self.schema_version()?;
        match found {
            None => {}
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::TooNew {
                    path: path.to_owned(),
                    found: v,
                });
            }
            // Later versions add their steps here, in order.
            Some(_) => {}
        }
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        if found == Some(1) {
            // 1 -> 2: the readings' blocks, summed from the stored minutes (a year of minutes
            // is about 35 000 blocks). An older wattmesh refuses the database from here on
            // (TooNew), so its writes can never leave the blocks behind the minutes.
            let blocks: std::collections::BTreeSet<u64> = {
                let t = tx.open_table(READINGS)?;
                let mut set = std::collections::BTreeSet::new();
                for row in t.iter()? {
                    set.insert(block_of(row?.0.value()));
                }
                set
            };
            tracing::info!(
                blocks = blocks.len(),
                "database schema 1 -> 2: summing the stored readings per 15 minutes"
            );
            rebuild_blocks(&tx, blocks)?;
        }
        {
            let mut meta = tx.open_table(META)?;
            meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
            tx.open_table(CHARTERS)?;
            tx.open_table(OFFERS)?;
            tx.open_table(PEERS)?;
            tx.open_table(TRADES)?;
            tx.open_table(ATTESTATIONS)?;
            tx.open_table(COMMITMENTS)?;
            tx.open_table(READINGS)?;
            tx.open_table(READING_BLOCKS)?;
            tx.open_table(SETTLEMENTS)?;
            tx.open_table(ROSTER)?;
            tx.open_table(REKEYS)?;
            tx.open_table(TICKETS)?;
            tx.open_table(USERS)?;
            tx.open_table(DOCUMENTS)?;
            tx.open_table(NOTES)?;
            tx.open_table(REGISTERS)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The schema version recorded in the database, if any.
    pub fn schema_version(&self) -> Result<Option<u32>, StoreError> {
        let tx = self.db.begin_read()?;
        let meta = match tx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(meta.get("schema_version")?.and_then(|v| {
            let b: [u8; 4] = v.value().try_into().ok()?;
            Some(u32::from_le_bytes(b))
        }))
    }

    /// Sets a metadata value durably.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        tx.open_table(META)?.insert(key, value)?;
        tx.commit()?;
        Ok(())
    }

    /// Reads a metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(META)?.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Stores a charter envelope durably.
    pub fn put_charter(&self, version: u32, envelope: &[u8]) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        tx.open_table(CHARTERS)?.insert(version, envelope)?;
        tx.commit()?;
        Ok(())
    }

    /// All charter envelopes, oldest first.
    pub fn charters(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(CHARTERS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(v.value().to_vec());
        }
        Ok(out)
    }

    /// Stores membership records durably (content id, envelope bytes).
    pub fn put_roster(&self, records: &[([u8; 32], Vec<u8>)]) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        {
            let mut t = tx.open_table(ROSTER)?;
            for (id, bytes) in records {
                t.insert(id.as_slice(), bytes.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every stored membership record's bytes.
    pub fn roster(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.all_values(ROSTER)
    }

    /// Stores a network key rotation part durably.
    pub fn put_rekey(&self, epoch: u32, part: u8, bytes: &[u8]) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        tx.open_table(REKEYS)?.insert((epoch, part), bytes)?;
        tx.commit()?;
        Ok(())
    }

    /// Every stored rotation part, oldest epoch first.
    pub fn rekeys(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(REKEYS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            out.push(row?.1.value().to_vec());
        }
        Ok(out)
    }

    /// Stores a ticket this node issued.
    pub fn put_ticket(&self, id: &[u8; 32], bytes: &[u8]) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        tx.open_table(TICKETS)?.insert(id.as_slice(), bytes)?;
        tx.commit()?;
        Ok(())
    }

    /// Every ticket this node issued.
    pub fn tickets(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.all_values(TICKETS)
    }

    /// Stores (or replaces) a web UI account durably.
    pub fn put_user(&self, name: &str, record: &[u8]) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        tx.open_table(USERS)?.insert(name, record)?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes a web UI account; whether it existed.
    pub fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        let existed = tx.open_table(USERS)?.remove(name)?.is_some();
        tx.commit()?;
        Ok(existed)
    }

    /// Every web UI account: name and record.
    pub fn users(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(USERS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn all_values(&self, table: TableDefinition<&[u8], &[u8]>) -> Result<Vec<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            out.push(row?.1.value().to_vec());
        }
        Ok(out)
    }

    /// Deletes stored offers that expired before `now_ms`; returns how many.
    pub fn prune_expired_offers(&self, now_ms: u64) -> Result<usize, StoreError> {
        let expired: Vec<OfferId> = {
            let tx = self.db.begin_read()?;
            let t = tx.open_table(OFFERS)?;
            let mut v = Vec::new();
            for row in t.iter()? {
                let (_, bytes) = row?;
                let offer = wattmesh_protocol::Envelope::from_bytes(bytes.value())
                    .and_then(|e| e.payload_as::<wattmesh_protocol::Offer>());
                if let Ok(o) = offer {
                    if o.expires_ms < now_ms {
                        v.push(o.id());
                    }
                }
            }
            v
        };
        let n = expired.len();
        self.remove_offers(&expired)?;
        Ok(n)
    }

    /// Removes offers by id (expired ones, when pruning).
    pub fn remove_offers(&self, ids: &[OfferId]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write()?;
        // Losing a prune in a crash only means pruning again.
        tx.set_durability(Durability::None)?;
        {
            let mut t = tx.open_table(OFFERS)?;
            for id in ids {
                t.remove(offer_key(id).as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Stores neighbours' offers as gossip brought them, in one transaction that is not flushed
    /// to the disk on its own (`Durability::None`): it becomes durable with the node's next
    /// durable commit (a trade, an attestation, the meter's registers). A power cut may lose the
    /// last few, which sync brings back from the neighbours; what is lost is never ours.
    pub fn put_gossiped_offers(&self, offers: &[(OfferId, Vec<u8>)]) -> Result<(), StoreError> {
        if offers.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::None)?;
        {
            let mut t = tx.open_table(OFFERS)?;
            for (id, envelope) in offers {
                t.insert(offer_key(id).as_slice(), envelope.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Makes every earlier commit durable (those made with `Durability::None`): an empty
    /// durable commit. The node calls it when it stops.
    pub fn make_durable(&self) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        tx.commit()?;
        Ok(())
    }

    /// Persists market records in one durable transaction, in order (a maker's trade and its
    /// offer's next version land together or not at all).
    pub fn put_records(&self, records: &[Record]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        {
            let mut offers = tx.open_table(OFFERS)?;
            let mut trades = tx.open_table(TRADES)?;
            let mut settlements = tx.open_table(SETTLEMENTS)?;
            let mut documents = tx.open_table(DOCUMENTS)?;
            let mut notes = tx.open_table(NOTES)?;
            for r in records {
                match r {
                    Record::Offer { id, envelope } => {
                        offers.insert(offer_key(id).as_slice(), envelope.as_slice())?;
                    }
                    Record::Trade {
                        id,
                        state,
                        envelope,
                    } => {
                        let mut v = Vec::with_capacity(envelope.len() + 1);
                        v.push(trade_state_byte(*state));
                        v.extend_from_slice(envelope);
                        trades.insert(id.to_bytes().as_slice(), v.as_slice())?;
                    }
                    Record::Settlement {
                        id,
                        state,
                        envelope,
                        dispute,
                    } => {
                        let v = postcard::to_allocvec(&StoredSettlement {
                            state: *state,
                            envelope: envelope.clone(),
                            dispute: dispute.clone(),
                        })
                        .expect("postcard encoding of a settlement record is infallible");
                        settlements.insert(id.to_bytes().as_slice(), v.as_slice())?;
                    }
                    Record::Document {
                        hash,
                        state,
                        envelope,
                    } => {
                        let mut v = Vec::with_capacity(envelope.len() + 1);
                        v.push(doc_state_byte(*state));
                        v.extend_from_slice(envelope);
                        documents.insert(hash.0.as_slice(), v.as_slice())?;
                    }
                    Record::Note { trade, envelope } => {
                        let payload = Envelope::from_bytes(envelope)
                            .map(|e| e.payload)
                            .unwrap_or_default();
                        let mut k = trade.to_bytes().to_vec();
                        k.extend_from_slice(&document_hash(&payload).0);
                        notes.insert(k.as_slice(), envelope.as_slice())?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every market record: offers, trades and settlements (to rebuild the market).
    pub fn records(&self) -> Result<Vec<Record>, StoreError> {
        let tx = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in tx.open_table(OFFERS)?.iter()? {
            let (k, v) = row?;
            let k = k.value();
            if k.len() != 40 {
                continue;
            }
            let mut maker = [0u8; 32];
            maker.copy_from_slice(&k[..32]);
            let mut nonce = [0u8; 8];
            nonce.copy_from_slice(&k[32..]);
            out.push(Record::Offer {
                id: OfferId {
                    maker: wattmesh_protocol::NodeId(maker),
                    nonce: u64::from_be_bytes(nonce),
                },
                envelope: v.value().to_vec(),
            });
        }
        for row in tx.open_table(TRADES)?.iter()? {
            let (k, v) = row?;
            let Some(id) = trade_id_from(k.value()) else {
                continue;
            };
            if let Some((state, envelope)) = split_trade(v.value()) {
                out.push(Record::Trade {
                    id,
                    state,
                    envelope,
                });
            }
        }
        for row in tx.open_table(SETTLEMENTS)?.iter()? {
            let (k, v) = row?;
            let Some(id) = trade_id_from(k.value()) else {
                continue;
            };
            if let Ok(s) = postcard::from_bytes::<StoredSettlement>(v.value()) {
                out.push(Record::Settlement {
                    id,
                    state: s.state,
                    envelope: s.envelope,
                    dispute: s.dispute,
                });
            }
        }
        for row in tx.open_table(DOCUMENTS)?.iter()? {
            let (k, v) = row?;
            let (Ok(hash), Some((&state, envelope))) =
                (<[u8; 32]>::try_from(k.value()), v.value().split_first())
            else {
                continue;
            };
            if let Some(state) = doc_state_from(state) {
                out.push(Record::Document {
                    hash: Hash32(hash),
                    state,
                    envelope: envelope.to_vec(),
                });
            }
        }
        for row in tx.open_table(NOTES)?.iter()? {
            let (k, v) = row?;
            let Some(trade) = k.value().get(..40).and_then(trade_id_from) else {
                continue;
            };
            out.push(Record::Note {
                trade,
                envelope: v.value().to_vec(),
            });
        }
        Ok(out)
    }

    /// Stores attestation envelopes durably (one transaction).
    pub fn put_attestations(&self, items: &[ChainItem]) -> Result<(), StoreError> {
        self.put_chain(items, &[])
    }

    /// Stores attestation and commitment envelopes durably, in one transaction (a private
    /// attestation and its commitment are never stored one without the other).
    pub fn put_chain(
        &self,
        attestations: &[ChainItem],
        commitments: &[ChainItem],
    ) -> Result<(), StoreError> {
        if attestations.is_empty() && commitments.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        {
            let mut t = tx.open_table(ATTESTATIONS)?;
            for (node, seq, bytes) in attestations {
                t.insert(attestation_key(node, *seq).as_slice(), bytes.as_slice())?;
            }
            let mut t = tx.open_table(COMMITMENTS)?;
            for (node, seq, bytes) in commitments {
                t.insert(attestation_key(node, *seq).as_slice(), bytes.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// `node`'s commitments from `from_seq` on, at most `limit`, in sequence order.
    pub fn commitments(
        &self,
        node: &wattmesh_protocol::NodeId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .chain_rows(COMMITMENTS, node, from_seq, limit)?
            .into_iter()
            .map(|(_, b)| b)
            .collect())
    }

    fn chain_rows(
        &self,
        table: TableDefinition<&[u8], &[u8]>,
        node: &wattmesh_protocol::NodeId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table)?;
        let lo = attestation_key(node, from_seq);
        let hi = attestation_key(node, u64::MAX);
        let mut out = Vec::new();
        for row in t.range(lo.as_slice()..=hi.as_slice())? {
            if out.len() >= limit {
                break;
            }
            let row = row?;
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&row.0.value()[32..]);
            out.push((u64::from_be_bytes(seq), row.1.value().to_vec()));
        }
        Ok(out)
    }

    /// `node`'s chain from `from_seq` on, for at most `limit` sequence numbers: per sequence
    /// number held, the attestation and the commitment, whichever are held.
    pub fn chain(
        &self,
        node: &wattmesh_protocol::NodeId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<ChainEntry>, StoreError> {
        let full = self.chain_rows(ATTESTATIONS, node, from_seq, limit)?;
        let committed = self.chain_rows(COMMITMENTS, node, from_seq, limit)?;
        let mut by_seq: std::collections::BTreeMap<u64, ChainEntry> = Default::default();
        for (seq, b) in full {
            by_seq
                .entry(seq)
                .or_insert_with(|| ChainEntry::new(seq))
                .attestation = Some(b);
        }
        for (seq, b) in committed {
            by_seq
                .entry(seq)
                .or_insert_with(|| ChainEntry::new(seq))
                .commitment = Some(b);
        }
        Ok(by_seq.into_values().take(limit).collect())
    }

    /// The highest sequence number of `node`'s chain held, attestation or commitment.
    pub fn last_chain_seq(
        &self,
        node: &wattmesh_protocol::NodeId,
    ) -> Result<Option<u64>, StoreError> {
        let tx = self.db.begin_read()?;
        let lo = attestation_key(node, 0);
        let hi = attestation_key(node, u64::MAX);
        let mut best = None;
        for table in [ATTESTATIONS, COMMITMENTS] {
            let t = tx.open_table(table)?;
            if let Some(row) = t.range(lo.as_slice()..=hi.as_slice())?.next_back() {
                let row = row?;
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&row.0.value()[32..]);
                let seq = u64::from_be_bytes(seq);
                best = Some(best.map_or(seq, |b: u64| b.max(seq)));
            }
        }
        Ok(best)
    }

    /// `node`'s attestations from `from_seq` on, at most `limit`, in sequence order.
    pub fn attestations(
        &self,
        node: &wattmesh_protocol::NodeId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(ATTESTATIONS)?;
        let lo = attestation_key(node, from_seq);
        let hi = attestation_key(node, u64::MAX);
        let mut out = Vec::new();
        for row in t.range(lo.as_slice()..=hi.as_slice())? {
            if out.len() >= limit {
                break;
            }
            out.push(row?.1.value().to_vec());
        }
        Ok(out)
    }

    /// `node`'s last `n` attestations, in sequence order.
    pub fn recent_attestations(
        &self,
        node: &wattmesh_protocol::NodeId,
        n: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(ATTESTATIONS)?;
        let lo = attestation_key(node, 0);
        let hi = attestation_key(node, u64::MAX);
        let mut out = Vec::new();
        for row in t.range(lo.as_slice()..=hi.as_slice())?.rev() {
            if out.len() >= n {
                break;
            }
            out.push(row?.1.value().to_vec());
        }
        out.reverse();
        Ok(out)
    }

    /// `node`'s attestation with the highest sequence number.
    pub fn last_attestation(
        &self,
        node: &wattmesh_protocol::NodeId,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(ATTESTATIONS)?;
        let lo = attestation_key(node, 0);
        let hi = attestation_key(node, u64::MAX);
        let last = t.range(lo.as_slice()..=hi.as_slice())?.next_back();
        Ok(match last {
            Some(row) => Some(row?.1.value().to_vec()),
            None => None,
        })
    }

    /// Stores a meter source's registers durably (committed with `Durability::Immediate`
    /// before it returns). A register is never lowered: each row keeps the larger of its stored
    /// and its new value, in the same transaction.
    pub fn put_meter_registers(
        &self,
        channels: &[crate::meter::registers::SavedChannel],
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        {
            let mut t = tx.open_table(REGISTERS)?;
            for c in channels {
                let key = c.key();
                let old = t.get(key.as_str())?.and_then(|v| {
                    postcard::from_bytes::<crate::meter::registers::SavedChannel>(v.value()).ok()
                });
                let row = match old {
                    Some(old) => c.max(&old),
                    None => c.clone(),
                };
                let bytes = postcard::to_stdvec(&row).map_err(|e| {
                    StoreError::Db(redb::Error::Corrupted(format!("encoding registers: {e}")))
                })?;
                t.insert(key.as_str(), bytes.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every stored register row of `source`. A row that does not decode is an error, not
    /// skipped: continuing the registers from zero would make them go backwards.
    pub fn meter_registers(
        &self,
        source: &str,
    ) -> Result<Vec<crate::meter::registers::SavedChannel>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(REGISTERS)?;
        let prefix = format!("{source}/");
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            if !k.value().starts_with(&prefix) {
                continue;
            }
            let c = postcard::from_bytes(v.value()).map_err(|e| {
                StoreError::Db(redb::Error::Corrupted(format!(
                    "the stored registers {} do not decode: {e}",
                    k.value()
                )))
            })?;
            out.push(c);
        }
        Ok(out)
    }

    /// Stores per-minute readings (minute start, postcard of [`Minute`]), and the sums of the
    /// blocks they fall in, in one transaction. Batched and not immediately durable: readings
    /// are not signed, and at worst the last minutes before a power cut are lost (the
    /// attestations, which carry the registers, are committed durably before they are signed).
    pub fn put_readings(&self, items: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::None)?;
        let mut blocks = std::collections::BTreeSet::new();
        {
            let mut t = tx.open_table(READINGS)?;
            for (minute, bytes) in items {
                t.insert(*minute, bytes.as_slice())?;
                blocks.insert(block_of(*minute));
            }
        }
        rebuild_blocks(&tx, blocks)?;
        tx.commit()?;
        Ok(())
    }

    /// Readings for minutes in `[from, to)`, as stored.
    pub fn readings(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(READINGS)?;
        let mut out = Vec::new();
        for row in t.range(from..to)? {
            let (k, v) = row?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Readings for minutes in `[from, to)`, decoded (rows that do not decode are left out).
    pub fn minutes(&self, from: u64, to: u64) -> Result<Vec<Minute>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(READINGS)?;
        let mut out = Vec::new();
        for row in t.range(from..to)? {
            if let Ok(m) = postcard::from_bytes::<Minute>(row?.1.value()) {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The readings for minutes in `[from, to)`, in time order, summed: a sum per block of
    /// [`READING_BLOCK_MS`] that lies wholly in the range, and a sum of one minute for each
    /// minute in the part-blocks at either end. Reads a row per block, not per minute.
    pub fn minute_sums(&self, from: u64, to: u64) -> Result<Vec<MinuteSum>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let tx = self.db.begin_read()?;
        let minutes = tx.open_table(READINGS)?;
        let blocks = tx.open_table(READING_BLOCKS)?;
        let whole_from = from
            .div_ceil(READING_BLOCK_MS)
            .saturating_mul(READING_BLOCK_MS);
        let whole_to = to - to % READING_BLOCK_MS;
        let mut out = Vec::new();
        let singles = |out: &mut Vec<MinuteSum>, a: u64, b: u64| -> Result<(), StoreError> {
            if a < b {
                for row in minutes.range(a..b)? {
                    if let Ok(m) = postcard::from_bytes::<Minute>(row?.1.value()) {
                        out.push(MinuteSum::from(&m));
                    }
                }
            }
            Ok(())
        };
        if whole_from >= whole_to {
            singles(&mut out, from, to)?;
            return Ok(out);
        }
        singles(&mut out, from, whole_from)?;
        for row in blocks.range(whole_from..whole_to)? {
            let (k, v) = row?;
            if let Ok(b) = postcard::from_bytes::<StoredBlock>(v.value()) {
                out.push(b.sum(k.value()));
            }
        }
        singles(&mut out, whole_to, to)?;
        Ok(out)
    }

    /// Deletes readings older than `before`, and their blocks.
    pub fn prune_readings(&self, before: u64) -> Result<usize, StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::None)?;
        let n;
        {
            let mut t = tx.open_table(READINGS)?;
            let keys: Vec<u64> = t
                .range(..before)?
                .filter_map(|r| r.ok().map(|(k, _)| k.value()))
                .collect();
            n = keys.len();
            for k in keys {
                t.remove(k)?;
            }
            let mut b = tx.open_table(READING_BLOCKS)?;
            let gone: Vec<u64> = b
                .range(..block_of(before))?
                .filter_map(|r| r.ok().map(|(k, _)| k.value()))
                .collect();
            for k in gone {
                b.remove(k)?;
            }
        }
        // The block `before` falls in may have lost some of its minutes.
        if n > 0 && before % READING_BLOCK_MS != 0 {
            rebuild_blocks(&tx, [block_of(before)])?;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Remembers a peer's addresses (not money-critical: batched durability).
    pub fn put_peer(&self, peer: &[u8], addrs: &[String]) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::None)?;
        tx.open_table(PEERS)?
            .insert(peer, addrs.join("\n").as_str())?;
        tx.commit()?;
        Ok(())
    }

    /// Known peers and their addresses.
    pub fn peers(&self) -> Result<Vec<KnownPeer>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(PEERS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let addrs = v.value().lines().map(str::to_owned).collect();
            out.push((k.value().to_vec(), addrs));
        }
        Ok(out)
    }
}

fn trade_id_from(k: &[u8]) -> Option<wattmesh_protocol::TradeId> {
    if k.len() != 40 {
        return None;
    }
    let mut taker = [0u8; 32];
    taker.copy_from_slice(&k[..32]);
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&k[32..]);
    Some(wattmesh_protocol::TradeId {
        taker: wattmesh_protocol::NodeId(taker),
        nonce: u64::from_be_bytes(nonce),
    })
}

fn attestation_key(node: &wattmesh_protocol::NodeId, seq: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&node.0);
    k[32..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn split_trade(v: &[u8]) -> Option<(TradeState, Vec<u8>)> {
    let (&state, rest) = v.split_first()?;
    Some((trade_state_from(state)?, rest.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattmesh_protocol::sample;

    /// The sample offer written by `write` into a new database, which is then closed: the
    /// database opened again (with its directory, which must outlive it), and what it should
    /// hold.
    fn written_then_reopened(
        write: impl FnOnce(&Store, OfferId, Vec<u8>),
    ) -> (tempfile::TempDir, Store, Vec<Record>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let (id, envelope) = (sample::offer().id(), sample::offer_envelope().to_bytes());
        write(&Store::open(&path).unwrap(), id, envelope.clone());
        let s = Store::open(&path).unwrap();
        (dir, s, vec![Record::Offer { id, envelope }])
    }

    #[test]
    fn gossiped_offers_survive_a_clean_stop() {
        let (_dir, s, expected) = written_then_reopened(|s, id, envelope| {
            s.put_gossiped_offers(&[(id, envelope)]).unwrap();
            s.make_durable().unwrap();
        });
        assert_eq!(s.records().unwrap(), expected);
    }

    #[test]
    fn offers_survive_reopening() {
        let (_dir, s, expected) = written_then_reopened(|s, id, envelope| {
            s.put_records(&[Record::Offer { id, envelope }]).unwrap();
        });
        assert_eq!(s.records().unwrap(), expected);
        assert_eq!(s.schema_version().unwrap(), Some(SCHEMA_VERSION));
        assert_eq!(
            s.prune_expired_offers(sample::offer().expires_ms).unwrap(),
            0
        );
        assert_eq!(
            s.prune_expired_offers(sample::offer().expires_ms + 1)
                .unwrap(),
            1
        );
        assert!(s.records().unwrap().is_empty());
    }

    /// Minutes of a made-up home from `from` for `n` minutes, with gaps (the node was down).
    fn some_minutes(from: u64, n: u64) -> Vec<(u64, Vec<u8>)> {
        let mut import = 1_000u64;
        (0..n)
            .filter(|i| i % 97 < 90 && i % 1_440 != 700)
            .map(|i| {
                let t = from + i * 60_000;
                let grid = ((i * 7_919) % 5_000) as i32 - 2_000;
                import += u64::from(grid.max(0).unsigned_abs()) / 60;
                let m = Minute {
                    minute_ms: t,
                    grid_w: grid,
                    load_w: 300 + (i % 1_000) as i32,
                    solar_w: ((i * 31) % 4_000) as i32,
                    battery_w: (i % 13) as i32 - 6,
                    import_wh: import,
                    export_wh: i / 3,
                };
                (t, postcard::to_allocvec(&m).unwrap())
            })
            .collect()
    }

    /// Steps from the blocks are the steps from the minutes, whatever the range's ends.
    fn check_sums(s: &Store, from: u64, to: u64) {
        use crate::web::export::{aggregate, aggregate_sums};
        let minutes = s.minutes(from, to).unwrap();
        // Steps start at the local midnight before `from` (as the API aligns them), at
        // UTC-6, UTC+5:30, UTC+5:45 and UTC, or at the epoch (the CSV's slots).
        let day = 86_400_000i64;
        let origins = [-360i64, 330, 345, 0]
            .map(|off| {
                let shifted = from as i64 + off * 60_000;
                (shifted - shifted.rem_euclid(day) - off * 60_000) as u64
            })
            .into_iter()
            .chain([0]);
        for origin in origins {
            for step in [READING_BLOCK_MS, 3_600_000, 86_400_000] {
                let from_blocks = aggregate_sums(s.minute_sums(from, to).unwrap(), step, origin);
                let from_minutes = aggregate(&minutes, step, origin);
                assert!(
                    from_blocks == from_minutes,
                    "{from}..{to} step {step} origin {origin}: {} steps from blocks, {} from \
                     minutes, first difference {:?}",
                    from_blocks.len(),
                    from_minutes.len(),
                    from_blocks.iter().zip(&from_minutes).find(|(a, b)| a != b)
                );
            }
        }
    }

    #[test]
    fn readings_summed_per_block_give_the_same_steps_as_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db.redb")).unwrap();
        let t0 = 1_782_000_420_000; // 2026-06-21 00:07 UTC: not on a block boundary
        let rows = some_minutes(t0, 3 * 1_440 + 17);
        // In uneven batches, one of them written twice.
        for chunk in rows.chunks(611) {
            s.put_readings(chunk).unwrap();
        }
        s.put_readings(&rows[100..200]).unwrap();
        let end = t0 + (3 * 1_440 + 17) * 60_000;
        for (from, to) in [
            (t0, end),
            (t0 - 3_600_000, end + 3_600_000),
            (t0 + 7 * 60_000, end - 11 * 60_000),
            (t0 + 60_000, t0 + 10 * 60_000),
            (1_782_000_900_000, 1_782_090_000_000),
        ] {
            check_sums(&s, from, to);
        }
        // Blocks read a row per 15 minutes: 00:15 to 01:00 the next day is 99 blocks (every
        // block has minutes: the gaps are 7 minutes long).
        let whole = s.minute_sums(1_782_000_900_000, 1_782_090_000_000).unwrap();
        assert_eq!(whole.len(), 99);
        assert!(whole.iter().all(|b| b.minutes > 1));
        assert!(s.minute_sums(end, t0).unwrap().is_empty());

        // Pruning mid-block keeps the blocks in step with the minutes left.
        let before = t0 + 1_440 * 60_000 + 7 * 60_000;
        assert!(s.prune_readings(before).unwrap() > 0);
        check_sums(&s, t0, end);
        assert_eq!(s.minutes(t0, end).unwrap()[0].minute_ms, before);
        assert_eq!(s.minute_sums(t0, end).unwrap()[0].minutes, 1);
    }

    #[test]
    fn a_schema_1_database_gets_its_reading_blocks_on_opening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let t0 = 1_782_043_200_000;
        let end = t0 + 2 * 1_440 * 60_000;
        let expected = {
            let s = Store::open(&path).unwrap();
            s.put_readings(&some_minutes(t0, 2 * 1_440)).unwrap();
            let expected = s.minute_sums(t0, end).unwrap();
            // What schema 1 held: the minutes, no blocks.
            let mut tx = s.db.begin_write().unwrap();
            tx.set_durability(Durability::Immediate).unwrap();
            tx.delete_table(READING_BLOCKS).unwrap();
            tx.commit().unwrap();
            s.put_meta("schema_version", &1u32.to_le_bytes()).unwrap();
            assert!(s.minute_sums(t0, end).is_err());
            expected
        };
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), Some(2));
        assert_eq!(s.minute_sums(t0, end).unwrap(), expected);
        assert_eq!(expected.len(), 2 * 96); // from 12:00, two days of whole blocks
        check_sums(&s, t0, end);
    }

    #[test]
    fn a_database_from_a_newer_version_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        {
            let s = Store::open(&path).unwrap();
            s.put_meta("schema_version", &(SCHEMA_VERSION + 1).to_le_bytes())
                .unwrap();
        }
        let err = Store::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("newer wattmesh") && err.contains("db.redb"),
            "{err}"
        );
    }

    #[test]
    fn a_corrupt_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        std::fs::write(&path, b"this is not a redb file at all, just some bytes").unwrap();
        let err = Store::open(&path).unwrap_err().to_string();
        assert!(err.contains("db.redb"), "{err}");
    }
}
