//! The sync protocol (`/wattmesh/sync/1`): a newcomer, or a node back from an outage or a
//! partition, fetches what it missed from a peer. Everything fetched is validated as archival
//! ([`crate::validate`]): signatures and consistency, not freshness.

use crate::ids::NodeId;
use serde::{Deserialize, Serialize};

/// The most envelopes in one sync response.
pub const MAX_SYNC_ITEMS: usize = 256;
/// The largest sync request or response, in bytes.
pub const MAX_SYNC_MESSAGE_BYTES: usize = 1 << 20;

/// A request on `/wattmesh/sync/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// The charter chain, from version `from_version` on.
    Charters {
        /// First version wanted.
        from_version: u32,
    },
    /// Current offers for slots starting at or after `from_slot_ms`, the latest version of
    /// each, skipping the first `skip` (paging).
    Offers {
        /// Earliest slot wanted.
        from_slot_ms: u64,
        /// How many to skip.
        skip: u32,
    },
    /// `node`'s chain from sequence number `from_seq` on: for each sequence number, in order,
    /// the commitment if there is one, then the attestation if the responder may share it. A
    /// private attestation (privacy mode) goes only to its own node and, from that node, to
    /// its counterparties in the attestation's slot; everyone else gets the commitment alone.
    /// A page never splits one sequence number's items.
    Attestations {
        /// Whose.
        node: NodeId,
        /// First sequence number wanted.
        from_seq: u64,
    },
    /// Trades and settlements the responder holds with the requester, for slots at or after
    /// `from_slot_ms` (crash recovery and reconciliation).
    Shared {
        /// Earliest slot wanted.
        from_slot_ms: u64,
        /// How many to skip.
        skip: u32,
    },
    /// The membership records the responder holds (in record-id order), skipping the first
    /// `skip`. Answered to anyone with the network key: the records are public within the
    /// neighbourhood, self-authenticating, and a newcomer needs them to know who its
    /// neighbours are.
    Roster {
        /// How many to skip.
        skip: u32,
    },
}

/// A response on `/wattmesh/sync/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// Envelope bytes exactly as stored, at most [`MAX_SYNC_ITEMS`]; `more` says whether
    /// another page follows.
    Envelopes {
        /// The envelopes.
        items: Vec<Vec<u8>>,
        /// Whether to ask for the next page.
        more: bool,
    },
    /// The responder refuses (quota exceeded, not a member).
    Refused,
}
