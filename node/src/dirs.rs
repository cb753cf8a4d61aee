//! Where the node keeps its files.
//!
//! The data directory is, in order: the `--data-dir` flag, the `WATTMESH_DATA_DIR` environment
//! variable, `$STATE_DIRECTORY` when run by systemd, the system node's `/var/lib/wattmesh`
//! when the Debian package is installed (its config `/etc/wattmesh/wattmesh.toml` exists),
//! `$XDG_DATA_HOME/wattmesh`, or `~/.local/share/wattmesh`.
//!
//! The config file is the `--config` flag, `WATTMESH_CONFIG`, the package's
//! `/etc/wattmesh/wattmesh.toml` for the system node's data directory, or
//! `<data dir>/wattmesh.toml`.

use std::path::{Path, PathBuf};

/// The system node's data directory (the Debian package's, owned by the `wattmesh` user).
pub const SYSTEM_DATA_DIR: &str = "/var/lib/wattmesh";
/// The system node's config file, installed by the Debian package.
pub const SYSTEM_CONFIG: &str = "/etc/wattmesh/wattmesh.toml";

/// Resolves the data directory from an explicit choice or the environment.
pub fn data_dir(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    resolve_data_dir(
        explicit,
        |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        },
        Path::new(SYSTEM_CONFIG),
    )
}

/// [`data_dir`] with the environment and the system config's path as parameters.
pub fn resolve_data_dir(
    explicit: Option<PathBuf>,
    var: impl Fn(&str) -> Option<PathBuf>,
    system_config: &Path,
) -> anyhow::Result<PathBuf> {
    if let Some(d) = explicit {
        return Ok(d);
    }
    if let Some(d) = var("WATTMESH_DATA_DIR").or_else(|| var("STATE_DIRECTORY")) {
        return Ok(d);
    }
    if system_config.exists() {
        return Ok(PathBuf::from(SYSTEM_DATA_DIR));
    }
    if let Some(d) = var("XDG_DATA_HOME") {
        return Ok(d.join("wattmesh"));
    }
    if let Some(h) = var("HOME") {
        return Ok(h.join(".local/share/wattmesh"));
    }
    anyhow::bail!("no data directory: pass --data-dir or set WATTMESH_DATA_DIR")
}

/// The config file for `data_dir` when neither `--config` nor `WATTMESH_CONFIG` names one.
pub fn config_path(data_dir: &Path, system_config: &Path) -> PathBuf {
    if data_dir == Path::new(SYSTEM_DATA_DIR) && system_config.exists() {
        system_config.to_owned()
    } else {
        data_dir.join("wattmesh.toml")
    }
}

/// The node key's path inside the data directory.
pub fn key_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("node.key")
}

/// Refuses to write into a data directory that belongs to another user: files created there
/// (a key, the database) would be unreadable by the node that owns it. The usual case is
/// `sudo wattmesh join` on a Pi, where the node runs as the `wattmesh` user.
pub fn check_owner(data_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::metadata(data_dir) else {
        return Ok(());
    };
    // The effective user: /proc/self belongs to it.
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    match me {
        Some(uid) if uid != dir.uid() => anyhow::bail!(
            "{} belongs to another user (uid {}); run this as that user, e.g. \
             `sudo -u wattmesh wattmesh ...` for the system node",
            data_dir.display(),
            dir.uid()
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_node_is_found_only_when_the_package_is_installed() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path().join("wattmesh.toml");
        let env = |k: &str| (k == "HOME").then(|| PathBuf::from("/home/pi"));
        let d = resolve_data_dir(None, env, &sys).unwrap();
        assert_eq!(d, PathBuf::from("/home/pi/.local/share/wattmesh"));
        assert_eq!(config_path(&d, &sys), d.join("wattmesh.toml"));
        std::fs::write(&sys, "").unwrap();
        let d = resolve_data_dir(None, env, &sys).unwrap();
        assert_eq!(d, PathBuf::from(SYSTEM_DATA_DIR));
        assert_eq!(config_path(&d, &sys), sys);
        // Explicit choices and systemd's StateDirectory still win.
        let state = |k: &str| (k == "STATE_DIRECTORY").then(|| PathBuf::from("/srv/wm"));
        assert_eq!(
            resolve_data_dir(None, state, &sys).unwrap(),
            PathBuf::from("/srv/wm")
        );
        let x = resolve_data_dir(Some("/tmp/x".into()), env, &sys).unwrap();
        assert_eq!(config_path(&x, &sys), PathBuf::from("/tmp/x/wattmesh.toml"));
    }

    #[test]
    fn a_directory_of_our_own_passes_the_owner_check() {
        let tmp = tempfile::tempdir().unwrap();
        check_owner(tmp.path()).unwrap();
        check_owner(&tmp.path().join("missing")).unwrap();
    }
}
