//! Key backups sealed with a passphrase: the node's secret key encrypted with
//! XChaCha20-Poly1305 under a key derived from the passphrase by Argon2id. The file is text, so
//! it can be printed or mailed to oneself; the header line (with the KDF's parameters) is
//! authenticated with the ciphertext, so nothing in it can be changed unnoticed.
//!
//! ```text
//! wattmesh key backup v1 argon2id m=65536 t=3 p=1
//! node 3fa2…(64 hex digits: the node id, to recognise the file)
//! salt <32 hex digits>
//! nonce <48 hex digits>
//! data <96 hex digits: the 32-byte secret and the 16-byte tag>
//! ```

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use wattmesh_protocol::NodeKey;
use zeroize::Zeroizing;

/// A passphrase: wiped from memory when dropped, never printed.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Wraps a passphrase.
    pub fn new(text: String) -> Passphrase {
        Passphrase(Zeroizing::new(text))
    }

    /// The text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// The shortest passphrase accepted, in characters.
pub const MIN_PASSPHRASE: usize = 12;

/// Argon2id memory (KiB), passes and lanes: about a quarter of a second on a Raspberry Pi 4.
const M_KIB: u32 = 65_536;
const T: u32 = 3;
const P: u32 = 1;

/// Why a backup could not be made or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackupError {
    /// The passphrase is too short.
    #[error("a backup passphrase needs at least {MIN_PASSPHRASE} characters")]
    WeakPassphrase,
    /// The file is not a wattmesh key backup.
    #[error("not a wattmesh key backup: {0}")]
    Format(&'static str),
    /// Wrong passphrase, or the file was altered.
    #[error("the passphrase is wrong, or the backup was altered")]
    Decrypt,
}

fn header(m: u32, t: u32, p: u32) -> String {
    format!("wattmesh key backup v1 argon2id m={m} t={t} p={p}")
}

fn derive(
    passphrase: &str,
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, BackupError> {
    let params = argon2::Params::new(m, t, p, Some(32))
        .map_err(|_| BackupError::Format("impossible Argon2 parameters"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
        .map_err(|_| BackupError::Format("the salt is unusable"))?;
    Ok(key)
}

/// Seals `key` under `passphrase`. Slow on purpose (Argon2id): call it off the async runtime.
pub fn seal(key: &NodeKey, passphrase: &str) -> Result<String, BackupError> {
    if passphrase.chars().count() < MIN_PASSPHRASE {
        return Err(BackupError::WeakPassphrase);
    }
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 24];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut nonce);
    let k = derive(passphrase, &salt, M_KIB, T, P)?;
    let head = header(M_KIB, T, P);
    let secret = Zeroizing::new(key.secret_bytes());
    let data = XChaCha20Poly1305::new(k.as_ref().into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: secret.as_ref(),
                aad: head.as_bytes(),
            },
        )
        .map_err(|_| BackupError::Decrypt)?;
    Ok(format!(
        "{head}\nnode {}\nsalt {}\nnonce {}\ndata {}\n",
        key.node_id().to_hex(),
        hex::encode(salt),
        hex::encode(nonce),
        hex::encode(data)
    ))
}

/// Opens a backup made by [`seal`].
pub fn open(text: &str, passphrase: &str) -> Result<NodeKey, BackupError> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let head = lines.next().ok_or(BackupError::Format("empty"))?;
    let params = head
        .strip_prefix("wattmesh key backup v1 argon2id ")
        .ok_or(BackupError::Format("no wattmesh key backup header"))?;
    let mut mtp = [0u32; 3];
    for (slot, (name, part)) in mtp
        .iter_mut()
        .zip(["m=", "t=", "p="].iter().zip(params.split(' ')))
    {
        *slot = part
            .strip_prefix(name)
            .and_then(|v| v.parse().ok())
            .ok_or(BackupError::Format("unreadable Argon2 parameters"))?;
    }
    // A file may not ask for absurd work (an attacker's file must not exhaust memory).
    if mtp[0] > 1 << 20 || mtp[1] > 16 || mtp[2] > 8 {
        return Err(BackupError::Format("Argon2 parameters out of range"));
    }
    let mut field = |name: &'static str| -> Result<Vec<u8>, BackupError> {
        lines
            .next()
            .and_then(|l| l.strip_prefix(name))
            .and_then(|v| hex::decode(v.trim()).ok())
            .ok_or(BackupError::Format(name))
    };
    let node = field("node ")?;
    let salt = field("salt ")?;
    let nonce = field("nonce ")?;
    let data = field("data ")?;
    if nonce.len() != 24 || salt.len() < 8 || data.len() != 48 {
        return Err(BackupError::Format("a field has the wrong length"));
    }
    let k = derive(passphrase, &salt, mtp[0], mtp[1], mtp[2])?;
    let secret = Zeroizing::new(
        XChaCha20Poly1305::new(k.as_ref().into())
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &data,
                    aad: head.as_bytes(),
                },
            )
            .map_err(|_| BackupError::Decrypt)?,
    );
    let bytes: [u8; 32] = secret
        .as_slice()
        .try_into()
        .map_err(|_| BackupError::Decrypt)?;
    let key = NodeKey::from_secret(&Zeroizing::new(bytes));
    // The node line is not encrypted: it must name the key inside.
    if key.node_id().0.as_slice() != node.as_slice() {
        return Err(BackupError::Decrypt);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_opens_with_its_passphrase_only() {
        let key = NodeKey::generate(&mut OsRng);
        let text = seal(&key, "correct horse battery").unwrap();
        assert!(text.contains(&key.node_id().to_hex()));
        assert!(!text.contains(&hex::encode(key.secret_bytes())));
        let back = open(&text, "correct horse battery").unwrap();
        assert_eq!(back.node_id(), key.node_id());
        assert_eq!(
            open(&text, "correct horse batterY").unwrap_err(),
            BackupError::Decrypt
        );
        assert_eq!(
            seal(&key, "short").unwrap_err(),
            BackupError::WeakPassphrase
        );
    }

    #[test]
    fn altered_backups_are_refused() {
        let key = NodeKey::generate(&mut OsRng);
        let text = seal(&key, "correct horse battery").unwrap();
        // Cheaper Argon2 parameters in the header break the authentication.
        let weaker = text.replace("m=65536", "m=8192");
        assert_eq!(
            open(&weaker, "correct horse battery").unwrap_err(),
            BackupError::Decrypt
        );
        // A flipped ciphertext digit.
        let data_at = text.find("data ").unwrap() + 5;
        let mut bytes = text.clone().into_bytes();
        bytes[data_at] = if bytes[data_at] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert_eq!(
            open(&flipped, "correct horse battery").unwrap_err(),
            BackupError::Decrypt
        );
        // Another node's id in the clear line.
        let other = NodeKey::generate(&mut OsRng).node_id().to_hex();
        let renamed = text.replace(&key.node_id().to_hex(), &other);
        assert_eq!(
            open(&renamed, "correct horse battery").unwrap_err(),
            BackupError::Decrypt
        );
        // Not a backup at all, and absurd work.
        assert!(matches!(open("hello", "x"), Err(BackupError::Format(_))));
        let greedy = text.replace("m=65536", "m=99999999");
        assert!(matches!(
            open(&greedy, "correct horse battery"),
            Err(BackupError::Format(_))
        ));
    }
}
