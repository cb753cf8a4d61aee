//! Where the node keeps its files.
//!
//! The data directory is, in order: the `--data-dir` flag, the `WATTMESH_DATA_DIR` environment
//! variable, `$STATE_DIRECTORY` when run by systemd, `$XDG_DATA_HOME/wattmesh`, or
//! `~/.local/share/wattmesh`.

use std::path::PathBuf;

/// Resolves the data directory from an explicit choice or the environment.
pub fn data_dir(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = explicit {
        return Ok(d);
    }
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var("WATTMESH_DATA_DIR").or_else(|| var("STATE_DIRECTORY")) {
        return Ok(d);
    }
    if let Some(d) = var("XDG_DATA_HOME") {
        return Ok(d.join("wattmesh"));
    }
    if let Some(h) = var("HOME") {
        return Ok(h.join(".local/share/wattmesh"));
    }
    anyhow::bail!("no data directory: pass --data-dir or set WATTMESH_DATA_DIR")
}

/// The node key's path inside the data directory.
pub fn key_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("node.key")
}
