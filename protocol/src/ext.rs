//! Extensions: how a signed message grows new fields while older nodes still run.
//!
//! postcard is not self-describing, so a field cannot simply be appended: an old node would
//! see trailing bytes. Instead every message ends with a list of [`Extension`]s, sorted by tag,
//! each an opaque byte string the old node can skip. Following "it's OK to be odd": an unknown
//! **odd** tag is optional and ignored; an unknown **even** tag is critical, and a node that does
//! not know it must not act on the message (it ignores the message, without penalising anyone).
//! Larger changes get a new message kind or a new envelope version; see docs/PROTOCOL.md.

use serde::{Deserialize, Serialize};

/// The most extensions one message may carry.
pub const MAX_EXTENSIONS: usize = 8;
/// The largest extension body, in bytes.
pub const MAX_EXTENSION_BYTES: usize = 512;

/// One extension: a tag and its opaque body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    /// What the body means. Odd: optional; even: critical.
    pub tag: u16,
    /// The body, encoded as the extension's definition says.
    pub data: Vec<u8>,
}

/// What is wrong with a message's extension list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtError {
    /// Tags not strictly increasing, too many, or a body too large: provably malformed.
    #[error("malformed extension list")]
    Malformed,
    /// A critical extension this node does not understand.
    #[error("unknown critical extension {0}")]
    UnknownCritical(u16),
}

/// Checks an extension list against the tags this node understands (`known`).
pub fn check(exts: &[Extension], known: &[u16]) -> Result<(), ExtError> {
    if exts.len() > MAX_EXTENSIONS || exts.iter().any(|e| e.data.len() > MAX_EXTENSION_BYTES) {
        return Err(ExtError::Malformed);
    }
    if exts.windows(2).any(|w| w[0].tag >= w[1].tag) {
        return Err(ExtError::Malformed);
    }
    for e in exts {
        if e.tag % 2 == 0 && !known.contains(&e.tag) {
            return Err(ExtError::UnknownCritical(e.tag));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(tag: u16) -> Extension {
        Extension { tag, data: vec![] }
    }

    #[test]
    fn odd_unknown_is_fine_even_unknown_is_not() {
        assert_eq!(check(&[ext(1), ext(3)], &[]), Ok(()));
        assert_eq!(check(&[ext(2)], &[]), Err(ExtError::UnknownCritical(2)));
        assert_eq!(check(&[ext(2)], &[2]), Ok(()));
    }

    #[test]
    fn unsorted_or_duplicate_is_malformed() {
        assert_eq!(check(&[ext(3), ext(1)], &[]), Err(ExtError::Malformed));
        assert_eq!(check(&[ext(1), ext(1)], &[]), Err(ExtError::Malformed));
        let many: Vec<_> = (0..9).map(|t| ext(t * 2 + 1)).collect();
        assert_eq!(check(&many, &[]), Err(ExtError::Malformed));
    }
}
