//! The neighbourhood charter: the rules every member's node applies, signed by an admin.
//!
//! A charter's hash is in the domain of every signature made under it, so nodes that disagree
//! on the rules cannot accept each other's messages. New versions are signed by an admin of the
//! previous version and take effect at their `effective_ms`; messages keep verifying under the
//! charter they were signed for.

use crate::envelope::{Envelope, Kind, Message};
use crate::ext::Extension;
use crate::ids::{Hash32, NeighbourhoodId, NodeId};
use crate::units::PricePerKwh;
use serde::{Deserialize, Serialize};

/// The most admins a charter may name.
pub const MAX_ADMINS: usize = 16;

/// A neighbourhood's rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charter {
    /// The neighbourhood this charter governs.
    pub neighbourhood: NeighbourhoodId,
    /// The charter version: 1 when founded, +1 for every change.
    pub version: u32,
    /// The hash of the previous version ([`Hash32::ZERO`] for version 1).
    pub previous: Hash32,
    /// When this version takes effect, UTC milliseconds.
    pub effective_ms: u64,
    /// A name for people, at most 64 bytes of UTF-8.
    pub name: String,
    /// Delivery slot length in minutes: a divisor of 60 from 5 to 60.
    pub slot_minutes: u8,
    /// The utility's feed-in tariff: the lowest price an offer may carry.
    pub feed_in_price: PricePerKwh,
    /// The utility's retail tariff: the highest price an offer may carry.
    pub retail_price: PricePerKwh,
    /// ISO 4217 currency code (`USD`).
    pub currency: String,
    /// IANA time zone for statements and the UI (`America/Chicago`); slots are aligned in UTC.
    pub time_zone: String,
    /// Admin node ids, sorted ascending, no duplicates, 1 to [`MAX_ADMINS`].
    pub admins: Vec<NodeId>,
    /// Trading for a slot closes this many seconds before the slot starts.
    pub gate_closure_secs: u32,
    /// Attestations for a slot are due this many seconds after it ends; settlement follows.
    pub settlement_grace_secs: u32,
    /// Fresh messages whose timestamps are further than this ahead of the receiver's clock
    /// are ignored.
    pub max_clock_skew_ms: u32,
    /// The most offers one node may have open for one slot.
    pub max_open_offers_per_slot: u16,
    /// The most versions of one offer.
    pub max_offer_versions: u32,
    /// The largest power a home may trade, in watts; caps every quantity per slot.
    pub max_power_w: u32,
    /// Extensions (see [`crate::ext`]).
    pub ext: Vec<Extension>,
}

impl Message for Charter {
    const KIND: Kind = Kind::Charter;
}

/// What is wrong with a charter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CharterError {
    /// A field is out of its allowed range.
    #[error("charter field {field}: {why}")]
    Field {
        /// The field.
        field: &'static str,
        /// Why.
        why: &'static str,
    },
    /// The signer is not an admin of the charter that authorises this version.
    #[error("charter signed by a non-admin")]
    NotAdmin,
    /// The version does not follow its predecessor.
    #[error("charter does not follow its predecessor")]
    BadSuccession,
}

fn field(field: &'static str, why: &'static str) -> CharterError {
    CharterError::Field { field, why }
}

impl Charter {
    /// A founding charter with the defaults for the original design's home, Ames, Iowa:
    /// US dollars, 15-minute slots, a 4.0 ¢/kWh feed-in and a 13.5 ¢/kWh retail tariff.
    pub fn founding(
        neighbourhood: NeighbourhoodId,
        name: &str,
        founder: NodeId,
        effective_ms: u64,
    ) -> Charter {
        Charter {
            neighbourhood,
            version: 1,
            previous: Hash32::ZERO,
            effective_ms,
            name: name.to_owned(),
            slot_minutes: 15,
            feed_in_price: 4_000,
            retail_price: 13_500,
            currency: "USD".to_owned(),
            time_zone: "America/Chicago".to_owned(),
            admins: vec![founder],
            gate_closure_secs: 60,
            settlement_grace_secs: 300,
            max_clock_skew_ms: 30_000,
            max_open_offers_per_slot: 8,
            max_offer_versions: 256,
            max_power_w: 48_000,
            ext: Vec::new(),
        }
    }

    /// The slot length in milliseconds.
    pub fn slot_ms(&self) -> u64 {
        self.slot_minutes as u64 * 60_000
    }

    /// The largest energy one offer or trade may carry for one slot, in Wh.
    pub fn max_energy_per_slot_wh(&self) -> u64 {
        self.max_power_w as u64 * self.slot_minutes as u64 / 60
    }

    /// The charter's hash: what signatures made under it carry in their domain.
    /// `SHA-256("wattmesh/charter/v1" ‖ 0x00 ‖ payload)`, over the charter's canonical bytes.
    pub fn hash_of_payload(payload: &[u8]) -> Hash32 {
        Hash32::tagged("wattmesh/charter/v1", &[payload])
    }

    /// Checks every field's range. Does not look at signatures.
    pub fn check(&self) -> Result<(), CharterError> {
        if self.version == 0 {
            return Err(field("version", "starts at 1"));
        }
        if (self.version == 1) != (self.previous == Hash32::ZERO) {
            return Err(field("previous", "zero exactly for version 1"));
        }
        if self.name.is_empty() || self.name.len() > 64 {
            return Err(field("name", "1 to 64 bytes"));
        }
        if !(5..=60).contains(&self.slot_minutes) || 60 % self.slot_minutes != 0 {
            return Err(field("slot_minutes", "a divisor of 60 from 5 to 60"));
        }
        if self.feed_in_price > self.retail_price {
            return Err(field("feed_in_price", "must not exceed retail_price"));
        }
        if self.retail_price > 100_000_000 {
            return Err(field("retail_price", "absurd"));
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(field("currency", "three upper-case letters (ISO 4217)"));
        }
        if self.time_zone.is_empty() || self.time_zone.len() > 64 {
            return Err(field("time_zone", "1 to 64 bytes"));
        }
        if self.admins.is_empty() || self.admins.len() > MAX_ADMINS {
            return Err(field("admins", "1 to 16"));
        }
        if self.admins.windows(2).any(|w| w[0] >= w[1]) {
            return Err(field("admins", "sorted ascending without duplicates"));
        }
        if self.gate_closure_secs as u64 * 1000 >= self.slot_ms() * 4 {
            return Err(field("gate_closure_secs", "under four slot lengths"));
        }
        if !(30..=86_400).contains(&self.settlement_grace_secs) {
            return Err(field("settlement_grace_secs", "30 s to a day"));
        }
        if !(1_000..=600_000).contains(&self.max_clock_skew_ms) {
            return Err(field("max_clock_skew_ms", "1 s to 10 min"));
        }
        if self.max_open_offers_per_slot == 0 || self.max_offer_versions == 0 {
            return Err(field("max_open_offers_per_slot", "at least 1"));
        }
        if !(100..=1_000_000).contains(&self.max_power_w) {
            return Err(field("max_power_w", "100 W to 1 MW"));
        }
        crate::ext::check(&self.ext, &[]).map_err(|_| field("ext", "malformed or unknown"))?;
        Ok(())
    }

    /// Whether `id` is an admin of this version.
    pub fn is_admin(&self, id: &NodeId) -> bool {
        self.admins.binary_search(id).is_ok()
    }
}

/// A charter with its signed envelope and hash, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCharter {
    /// The charter.
    pub charter: Charter,
    /// Its hash (of the payload bytes).
    pub hash: Hash32,
    /// The envelope as received, kept to pass on unchanged.
    pub envelope: Envelope,
}

impl SignedCharter {
    /// Signs a founding charter (version 1) with the founder's key, who must be its admin.
    pub fn found(
        charter: Charter,
        key: &crate::sign::NodeKey,
    ) -> Result<SignedCharter, CharterError> {
        let env = Envelope::seal(&charter, Hash32::ZERO, key);
        SignedCharter::open(env, None)
    }

    /// Signs a new version that follows `previous`, by one of its admins.
    pub fn amend(
        previous: &SignedCharter,
        mut charter: Charter,
        key: &crate::sign::NodeKey,
    ) -> Result<SignedCharter, CharterError> {
        charter.previous = previous.hash;
        let env = Envelope::seal(&charter, previous.hash, key);
        SignedCharter::open(env, Some(previous))
    }

    /// Opens a charter envelope: signatures, fields, and succession from `previous` (which must
    /// be `None` exactly for version 1).
    pub fn open(
        env: Envelope,
        previous: Option<&SignedCharter>,
    ) -> Result<SignedCharter, CharterError> {
        env.verify_signatures()
            .map_err(|_| field("signature", "does not verify"))?;
        if env.signatures.len() != 1 {
            return Err(field("signature", "exactly one"));
        }
        let charter: Charter = env
            .payload_as()
            .map_err(|_| field("payload", "not a canonical charter"))?;
        charter.check()?;
        let signer = env.signer();
        match previous {
            None => {
                if charter.version != 1 || env.charter != Hash32::ZERO {
                    return Err(CharterError::BadSuccession);
                }
                if !charter.is_admin(&signer) {
                    return Err(CharterError::NotAdmin);
                }
            }
            Some(prev) => {
                if charter.version != prev.charter.version + 1
                    || charter.previous != prev.hash
                    || env.charter != prev.hash
                    || charter.neighbourhood != prev.charter.neighbourhood
                    || charter.effective_ms < prev.charter.effective_ms
                {
                    return Err(CharterError::BadSuccession);
                }
                if !prev.charter.is_admin(&signer) {
                    return Err(CharterError::NotAdmin);
                }
            }
        }
        let hash = Charter::hash_of_payload(&env.payload);
        Ok(SignedCharter {
            charter,
            hash,
            envelope: env,
        })
    }
}

/// The chain of charter versions a node knows, oldest first.
#[derive(Debug, Clone)]
pub struct CharterChain {
    versions: Vec<SignedCharter>,
}

impl CharterChain {
    /// Starts a chain from a founding charter.
    pub fn new(founding: SignedCharter) -> Result<CharterChain, CharterError> {
        if founding.charter.version != 1 {
            return Err(CharterError::BadSuccession);
        }
        Ok(CharterChain {
            versions: vec![founding],
        })
    }

    /// Appends the next version after checking its succession.
    pub fn push(&mut self, env: Envelope) -> Result<&SignedCharter, CharterError> {
        let next = SignedCharter::open(env, Some(self.latest()))?;
        self.versions.push(next);
        Ok(self.latest())
    }

    /// The newest known version (which may not be in effect yet).
    pub fn latest(&self) -> &SignedCharter {
        self.versions
            .last()
            .expect("a chain always holds its founding charter")
    }

    /// The version in effect at `now_ms`: the newest whose `effective_ms` has passed (the
    /// founding charter before that).
    pub fn at(&self, now_ms: u64) -> &SignedCharter {
        self.versions
            .iter()
            .rev()
            .find(|c| c.charter.effective_ms <= now_ms)
            .unwrap_or(&self.versions[0])
    }

    /// The version with this hash.
    pub fn get(&self, hash: &Hash32) -> Option<&SignedCharter> {
        self.versions.iter().find(|c| &c.hash == hash)
    }

    /// The neighbourhood.
    pub fn neighbourhood(&self) -> NeighbourhoodId {
        self.versions[0].charter.neighbourhood
    }

    /// All versions, oldest first.
    pub fn versions(&self) -> &[SignedCharter] {
        &self.versions
    }
}
