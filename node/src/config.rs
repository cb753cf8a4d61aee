//! The node's configuration: TOML, every key documented in `configs/node.example.toml`.
//!
//! `Config::default()` is a working local try-out: listen on loopback (IPv4 and IPv6) with an
//! ephemeral port, no mDNS, the control socket and database in the data directory. UPnP is
//! on in the default (for a real home node) but only starts once the node listens beyond
//! loopback; tests and the testnet turn it off. Neighbourhood rules do not
//! live here: they come from the signed charter.
//!
//! Environment overrides (applied after the file): `WATTMESH_LISTEN` (comma-separated
//! multiaddrs), `WATTMESH_BOOTSTRAP` (comma-separated multiaddrs with `/p2p/` ids),
//! `WATTMESH_MDNS` (`on`/`off`), `WATTMESH_UPNP` (`on`/`off`), `WATTMESH_CLOCK` (`auto`, `trust`,
//! `unsynced`).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Networking.
    pub network: NetworkConfig,
    /// Reaching homes behind their routers: relay, hole punching, UPnP.
    pub reach: ReachConfig,
    /// LAN discovery.
    pub mdns: MdnsConfig,
    /// How the node decides whether its clock is synchronised.
    pub clock: ClockConfig,
    /// Storage.
    pub storage: StorageConfig,
    /// The meter.
    pub meter: crate::metering::MeterConfig,
    /// The automatic trader's limits.
    pub trader: crate::market::trader::Limits,
    /// The web UI.
    pub web: crate::web::WebConfig,
    /// The optional status display (an SSD1306 OLED on a Pi's I2C bus).
    pub display: crate::display::DisplayConfig,
    /// Fault injection, for the testnet's hostile home only.
    pub testing: TestingConfig,
}

/// Fault injection. Never turn this on for a real home.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestingConfig {
    /// Let the control socket publish raw bytes on a gossip topic, bypassing every check (the
    /// testnet's hostile home sends forged, replayed, malformed and oversized messages so).
    pub allow_raw_publish: bool,
    /// Let the control socket move this node's clock (the testnet's clock-skew fault).
    pub allow_clock_skew: bool,
    /// Abort the process this many seconds after it starts, as a crash would (0: never). The
    /// testnet uses it to show that `--check` catches a broken home.
    pub crash_after_secs: u64,
}

/// Networking settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Addresses to listen on (libp2p multiaddrs, TCP only: the private network rules out QUIC).
    /// IPv6 addresses are used where the machine has IPv6; without it the node runs on the
    /// others and logs a warning.
    pub listen: Vec<String>,
    /// Peers to dial at start and whenever disconnected, as multiaddrs ending in `/p2p/<id>`.
    pub bootstrap: Vec<String>,
    /// Close a connection after this many seconds without any stream open.
    pub idle_timeout_secs: u64,
    /// The most established connections in total.
    pub max_connections: u32,
    /// The most established connections with one peer.
    pub max_connections_per_peer: u32,
    /// The most inbound requests (trade and sync together) one peer may make per minute.
    pub requests_per_peer_per_minute: u32,
    /// Timeout for one request-response exchange, in seconds.
    pub request_timeout_secs: u64,
    /// Gossipsub heartbeat, in milliseconds.
    pub heartbeat_ms: u64,
    /// How long gossipsub remembers message ids it has seen, in seconds. The application's
    /// replay window outlives it.
    pub duplicate_cache_secs: u64,
}

/// Reach settings: how homes behind separate home routers reach each other. Every connection,
/// relayed or not, runs under the neighbourhood's network key (see docs/ARCHITECTURE.md,
/// "Reach").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReachConfig {
    /// Serve circuit relay v2 to other members. A node only offers it while it knows that
    /// peers can dial it (AutoNAT, UPnP or `external_addresses`), so in practice the
    /// reachable members relay for the others.
    pub relay_server: bool,
    /// The most members that may hold a reservation on this node's relay at once.
    pub relay_max_reservations: u32,
    /// The most relayed connections this node carries at once.
    pub relay_max_circuits: u32,
    /// The most relayed connections one member may have through this node at once.
    pub relay_max_circuits_per_peer: u32,
    /// A relayed connection is closed after this many seconds; peers then dial again (hole
    /// punching has usually replaced it with a direct one long before).
    pub relay_max_circuit_secs: u64,
    /// A relayed connection is closed after carrying this many bytes.
    pub relay_max_circuit_bytes: u64,
    /// When to ask reachable members for a relay reservation, so that others can reach this
    /// node through them: `auto` (until AutoNAT, UPnP or `external_addresses` shows that
    /// peers can dial this node), `always` or `never`.
    pub reservations: crate::net::ReservationMode,
    /// On how many relays at most to hold a reservation.
    pub max_reservations: u32,
    /// Ask the home router (UPnP IGD) to forward the listening port. Sends SSDP multicast on
    /// the LAN; tests and the testnet turn it off.
    pub upnp: bool,
    /// Addresses where peers can dial this node (a port forwarded by hand), as multiaddrs
    /// such as `/ip4/203.0.113.7/tcp/4100`. They count as confirmed, so a node with one serves
    /// as a relay and holds no reservations.
    pub external_addresses: Vec<String>,
}

impl Default for ReachConfig {
    fn default() -> Self {
        ReachConfig {
            relay_server: true,
            relay_max_reservations: 64,
            relay_max_circuits: 32,
            relay_max_circuits_per_peer: 8,
            relay_max_circuit_secs: 30 * 60,
            relay_max_circuit_bytes: 16 * 1024 * 1024,
            reservations: crate::net::ReservationMode::Auto,
            max_reservations: 2,
            upnp: true,
            external_addresses: Vec::new(),
        }
    }
}

impl Config {
    /// The settings of the network behaviour of a node in neighbourhood `n`.
    pub fn behaviour_settings(
        &self,
        n: wattmesh_protocol::NeighbourhoodId,
    ) -> crate::net::behaviour::BehaviourSettings {
        let net = &self.network;
        crate::net::behaviour::BehaviourSettings {
            neighbourhood: n,
            heartbeat: std::time::Duration::from_millis(net.heartbeat_ms.max(50)),
            duplicate_cache: std::time::Duration::from_secs(net.duplicate_cache_secs.max(1)),
            request_timeout: std::time::Duration::from_secs(net.request_timeout_secs.max(1)),
            max_connections: net.max_connections,
            max_connections_per_peer: net.max_connections_per_peer.max(1),
            reach: self.reach_settings(),
        }
    }

    /// The network behaviour's reach settings. UPnP stays off while every listening address
    /// is on loopback (the local try-out): there is nothing to map.
    pub fn reach_settings(&self) -> crate::net::behaviour::ReachSettings {
        let r = &self.reach;
        let usize_of = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        let beyond_loopback = self.network.listen.iter().any(|a| {
            a.parse::<libp2p::Multiaddr>()
                .is_ok_and(|a| !crate::net::reach::is_loopback(&a))
        });
        crate::net::behaviour::ReachSettings {
            relay_server: r.relay_server,
            relay_max_reservations: usize_of(r.relay_max_reservations),
            relay_max_circuits: usize_of(r.relay_max_circuits),
            relay_max_circuits_per_peer: usize_of(r.relay_max_circuits_per_peer.max(1)),
            relay_max_circuit_duration: std::time::Duration::from_secs(
                r.relay_max_circuit_secs.max(1),
            ),
            relay_max_circuit_bytes: r.relay_max_circuit_bytes,
            upnp: r.upnp && beyond_loopback,
        }
    }
}

/// mDNS settings. Off in the built-in default (a try-out must never multicast on a machine's
/// real interfaces); the Raspberry Pi package's config turns it on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MdnsConfig {
    /// Whether to announce and browse with mDNS.
    pub enabled: bool,
    /// Interfaces to use (names such as `eth0`, `wlan0`). Empty means all of them.
    pub interfaces: Vec<String>,
}

/// How to tell whether the clock is synchronised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockCheck {
    /// Ask the kernel (adjtimex: NTP status); fall back to systemd-timesyncd's flag file.
    Auto,
    /// Assume synchronised (the testnet, where all nodes share the host's clock).
    Trust,
    /// Treat the clock as unsynchronised (tests of the refusal to sign).
    Unsynced,
}

/// Clock settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClockConfig {
    /// How to check.
    pub check: ClockCheck,
    /// A fixed offset added to the system clock, in milliseconds (the testnet's clock skew).
    pub offset_ms: i64,
    /// Simulated milliseconds per real millisecond: 1 on a real node; the testnet runs its
    /// neighbourhood faster. Network timers always run on real time.
    pub speed: u32,
    /// The real time (UTC ms) from which an accelerated clock runs faster; 0 means when the
    /// node starts. Homes of one testnet share it, so their clocks agree.
    pub origin_ms: u64,
}

/// Storage settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The database file; relative paths are inside the data directory.
    pub database: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            network: NetworkConfig::default(),
            reach: ReachConfig::default(),
            mdns: MdnsConfig {
                enabled: false,
                interfaces: Vec::new(),
            },
            clock: ClockConfig {
                check: ClockCheck::Auto,
                offset_ms: 0,
                speed: 1,
                origin_ms: 0,
            },
            storage: StorageConfig {
                database: PathBuf::from("wattmesh.redb"),
            },
            meter: crate::metering::MeterConfig::default(),
            trader: crate::market::trader::Limits::default(),
            web: crate::web::WebConfig::default(),
            display: crate::display::DisplayConfig::default(),
            testing: TestingConfig::default(),
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            listen: vec![
                "/ip4/127.0.0.1/tcp/0".to_owned(),
                "/ip6/::1/tcp/0".to_owned(),
            ],
            bootstrap: Vec::new(),
            idle_timeout_secs: 300,
            max_connections: 128,
            max_connections_per_peer: 2,
            requests_per_peer_per_minute: 600,
            request_timeout_secs: 10,
            heartbeat_ms: 700,
            duplicate_cache_secs: 120,
        }
    }
}

impl Default for ClockConfig {
    fn default() -> Self {
        Config::default().clock
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Config::default().storage
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("the config file {path} is invalid: {message}. See configs/node.example.toml")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the line.
        message: String,
    },
    /// An environment override is invalid.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Loads `path` if it exists (a missing file means the defaults), then applies the
    /// environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut cfg = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }

    /// Applies environment overrides read through `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let list = |s: String| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        };
        if let Some(v) = get("WATTMESH_LISTEN") {
            self.network.listen = list(v);
        }
        if let Some(v) = get("WATTMESH_BOOTSTRAP") {
            self.network.bootstrap = list(v);
        }
        let on_off = |var: &'static str, v: String| match v.as_str() {
            "on" | "true" | "1" => Ok(true),
            "off" | "false" | "0" => Ok(false),
            _ => Err(ConfigError::Env {
                var,
                message: format!("expected on or off, got {v:?}"),
            }),
        };
        if let Some(v) = get("WATTMESH_MDNS") {
            self.mdns.enabled = on_off("WATTMESH_MDNS", v)?;
        }
        if let Some(v) = get("WATTMESH_UPNP") {
            self.reach.upnp = on_off("WATTMESH_UPNP", v)?;
        }
        if let Some(v) = get("WATTMESH_CLOCK") {
            self.clock.check = match v.as_str() {
                "auto" => ClockCheck::Auto,
                "trust" => ClockCheck::Trust,
                "unsynced" => ClockCheck::Unsynced,
                _ => {
                    return Err(ConfigError::Env {
                        var: "WATTMESH_CLOCK",
                        message: format!("expected auto, trust or unsynced, got {v:?}"),
                    });
                }
            };
        }
        Ok(())
    }

    /// The database path, resolved against the data directory.
    pub fn database_path(&self, data_dir: &Path) -> PathBuf {
        data_dir.join(&self.storage.database)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_equals_the_defaults() {
        let text = include_str!("../../configs/node.example.toml");
        let cfg: Config = toml::from_str(text).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wattmesh.toml");
        std::fs::write(&path, "[network]\nlisten_on = []\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("wattmesh.toml") && err.contains("listen_on"),
            "{err}"
        );
        std::fs::write(&path, "[clock]\ncheck = \"sometimes\"\n").unwrap();
        assert!(Config::load(&path).is_err());
    }

    #[test]
    fn environment_overrides() {
        let mut cfg = Config::default();
        cfg.apply_env(|k| match k {
            "WATTMESH_BOOTSTRAP" => Some("/ip4/127.0.0.1/tcp/1, /ip4/127.0.0.1/tcp/2".into()),
            "WATTMESH_MDNS" => Some("off".into()),
            "WATTMESH_UPNP" => Some("off".into()),
            "WATTMESH_CLOCK" => Some("trust".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.network.bootstrap.len(), 2);
        assert!(!cfg.reach.upnp);
        assert_eq!(cfg.clock.check, ClockCheck::Trust);
        assert!(
            cfg.apply_env(|k| (k == "WATTMESH_MDNS").then(|| "maybe".into()))
                .is_err()
        );
    }
}
