//! Canonical encoding: postcard, with the checks postcard itself does not make.
//!
//! postcard's decoder accepts overlong varints, and serde maps would be written in iteration
//! order, so two different byte strings could decode to the same value. Signed bytes must have
//! exactly one encoding, so [`decode_canonical`] re-encodes what it decoded and requires byte
//! equality, rejects trailing bytes, and refuses anything over a size limit before decoding.
//! No signed type contains a map.

use serde::{Serialize, de::DeserializeOwned};

/// The largest envelope a node accepts, in bytes. Every gossiped or requested message fits.
pub const MAX_ENVELOPE_BYTES: usize = 4096;
/// The largest payload inside an envelope, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 3072;

/// Why bytes were not accepted as the canonical encoding of a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input is longer than the limit for its kind.
    #[error("{len} bytes is over the limit of {limit}")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The limit that applied.
        limit: usize,
    },
    /// postcard could not decode the bytes.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Bytes were left over after the value.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
    /// The bytes decode, but are not the canonical encoding of what they decode to
    /// (an overlong varint, for example).
    #[error("not the canonical encoding")]
    NonCanonical,
}

/// Encodes a value with postcard. Encoding the protocol's types cannot fail.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard encoding of protocol types is infallible")
}

/// Decodes `bytes` as a `T`, accepting only its canonical encoding and at most `limit` bytes.
pub fn decode_canonical<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let (value, rest): (T, &[u8]) =
        postcard::take_from_bytes(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes(rest.len()));
    }
    if encode(&value) != bytes {
        return Err(CodecError::NonCanonical);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_overlong_varint() {
        // 1 encoded canonically is [0x01]; [0x81, 0x00] is the same value, overlong.
        assert_eq!(decode_canonical::<u32>(&[0x01], 16), Ok(1));
        assert_eq!(
            decode_canonical::<u32>(&[0x81, 0x00], 16),
            Err(CodecError::NonCanonical)
        );
    }

    #[test]
    fn rejects_trailing_and_oversized() {
        assert_eq!(
            decode_canonical::<u8>(&[1, 2], 16),
            Err(CodecError::TrailingBytes(1))
        );
        assert!(matches!(
            decode_canonical::<u8>(&[1; 17], 16),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn rejects_bad_bool() {
        assert!(decode_canonical::<bool>(&[2], 16).is_err());
    }
}
