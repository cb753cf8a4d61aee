//! The node's identity key on disk.
//!
//! The key is created on first run, written with mode 0600 inside a 0700 directory, and never
//! logged. An existing key file that cannot be read or parsed is an error that names the file
//! and what to do: the node never silently makes a new key, because a new key is a new
//! identity and would orphan the node's trades, attestations and balances.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use wattmesh_protocol::NodeKey;
use zeroize::Zeroizing;

/// The first line of a key file.
const HEADER: &str = "# wattmesh node key v1: secret. Back it up; never share it.";

/// Why the key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file exists but could not be read.
    #[error(
        "cannot read the node key {path}: {source}. Fix its permissions or restore it from your \
         backup; wattmesh will not create a new key over it"
    )]
    Unreadable {
        /// The key file.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
    /// The file is not a key file.
    #[error(
        "the node key {path} is corrupt ({why}). Restore it from your backup \
         (`wattmesh keys backup` makes one); wattmesh will not replace it with a new identity"
    )]
    Corrupt {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        why: &'static str,
    },
    /// Others can read the file.
    #[error(
        "the node key {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The key could not be written.
    #[error("cannot write the node key {path}: {source}")]
    Write {
        /// The key file.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
}

/// Loads the key at `path`, or creates one if there is no file there yet.
/// Returns the key and whether it was just created.
pub fn load_or_create(path: &Path) -> Result<(NodeKey, bool), IdentityError> {
    match fs::symlink_metadata(path) {
        Ok(_) => load(path).map(|k| (k, false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(path).map(|k| (k, true)),
        Err(source) => Err(IdentityError::Unreadable {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Loads an existing key file.
pub fn load(path: &Path) -> Result<NodeKey, IdentityError> {
    let unreadable = |source| IdentityError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let meta = fs::metadata(path).map_err(unreadable)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(unreadable)?);
    parse(&text).map_err(|why| IdentityError::Corrupt {
        path: path.to_owned(),
        why,
    })
}

/// Parses the text of a key file (or of a plain backup).
pub fn parse(text: &str) -> Result<NodeKey, &'static str> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err("missing the wattmesh key header");
    }
    let hex_line = lines.next().ok_or("no key line")?.trim();
    if lines.any(|l| !l.trim().is_empty()) {
        return Err("unexpected lines after the key");
    }
    let mut secret = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_line, secret.as_mut()).map_err(|_| "the key is not 64 hex digits")?;
    Ok(NodeKey::from_secret(&secret))
}

/// The text of a key file for `key` (also the format of a plain backup).
pub fn render(key: &NodeKey) -> Zeroizing<String> {
    let secret = Zeroizing::new(key.secret_bytes());
    Zeroizing::new(format!("{HEADER}\n{}\n", hex::encode(secret.as_ref())))
}

/// Creates a new random key at `path`; fails if a file appears there meanwhile.
pub fn create(path: &Path) -> Result<NodeKey, IdentityError> {
    let key = NodeKey::generate(&mut rand_core::OsRng);
    write_new(path, &render(&key))?;
    Ok(key)
}

/// Writes `text` to a new file at `path` with mode 0600, durably; never overwrites.
pub fn write_new(path: &Path, text: &str) -> Result<(), IdentityError> {
    let write_err = |source| IdentityError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(write_err)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(write_err)?;
        }
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(write_err)?;
    f.write_all(text.as_bytes()).map_err(write_err)?;
    f.sync_all().map_err(write_err)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the new directory entry durable too.
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_run_creates_a_private_key_and_later_runs_load_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/node.key");
        let (k1, created) = load_or_create(&path).unwrap();
        assert!(created);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let (k2, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k1.node_id(), k2.node_id());
    }

    #[test]
    fn a_corrupt_key_is_an_error_never_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        write_new(&path, "garbage\n").unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(matches!(err, IdentityError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(path.to_str().unwrap()));
        // The corrupt file is left exactly as it was.
        assert_eq!(fs::read_to_string(&path).unwrap(), "garbage\n");
        let truncated = format!("{HEADER}\nabcd\n");
        fs::write(&path, truncated).unwrap();
        assert!(matches!(load(&path), Err(IdentityError::Corrupt { .. })));
    }

    #[test]
    fn an_unreadable_or_exposed_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let (_, _) = load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load(&path),
            Err(IdentityError::Permissions { .. })
        ));
        // A directory where the key should be cannot be read as a key.
        let as_dir = dir.path().join("dir.key");
        fs::create_dir(&as_dir).unwrap();
        assert!(load_or_create(&as_dir).is_err());
    }

    #[test]
    fn the_key_file_does_not_leak_through_debug() {
        let key = NodeKey::from_secret(&[5; 32]);
        let text = render(&key);
        assert!(!format!("{key:?}").contains(text.lines().nth(1).unwrap()));
        assert_eq!(parse(&text).unwrap().node_id(), key.node_id());
    }
}
