//! LAN discovery with mDNS (mdns-sd).
//!
//! One service type for wattmesh, `_wattmesh._tcp.local.`. Each node announces an instance
//! named by its peer id, with TXT records `p` (peer id), `n` (a keyed hash of the
//! neighbourhood id, so the id is not sent in clear and only members can match it) and `v`
//! (protocol version). Resolved instances of our neighbourhood are dialled; the rest ignored.
//!
//! mDNS only runs when the config enables it, and only on the configured interfaces (all if
//! none are named). Note that mdns-sd joins its multicast groups on every interface when it
//! starts, before the selection applies; it sends queries and announcements only on the
//! selected ones. Tests run it inside network namespaces; the testnet never enables it.

use crate::config::MdnsConfig;
use crate::net::NetHandle;
use libp2p::{Multiaddr, PeerId};
use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use std::collections::HashSet;
use tracing::{debug, info, warn};
use wattmesh_protocol::Hash32;

/// The wattmesh service type (the name part is at most 15 characters).
pub const SERVICE_TYPE: &str = "_wattmesh._tcp.local.";

/// A running mDNS responder and browser. Dropping it shuts mDNS down.
pub struct Mdns {
    daemon: ServiceDaemon,
}

impl std::fmt::Debug for Mdns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mdns")
    }
}

impl Drop for Mdns {
    fn drop(&mut self) {
        let _ = self.daemon.shutdown();
    }
}

/// The TXT value for a neighbourhood's discovery tag: its first 16 bytes in hex.
pub fn tag_text(tag: &Hash32) -> String {
    hex::encode(&tag.0[..16])
}

/// Starts announcing this node (listening on TCP `port`) and dialling neighbours found.
pub fn start(
    cfg: &MdnsConfig,
    local: PeerId,
    tag: &Hash32,
    port: u16,
    net: NetHandle,
) -> anyhow::Result<Mdns> {
    let daemon = ServiceDaemon::new()?;
    if !cfg.interfaces.is_empty() {
        daemon.disable_interface(IfKind::All)?;
        let names: Vec<IfKind> = cfg
            .interfaces
            .iter()
            .map(|n| IfKind::Name(n.clone()))
            .collect();
        daemon.enable_interface(names)?;
    }
    let peer = local.to_string();
    let tag = tag_text(tag);
    let props = [("p", peer.as_str()), ("n", tag.as_str()), ("v", "1")];
    let info = ServiceInfo::new(
        SERVICE_TYPE,
        &peer,
        &format!("{peer}.local."),
        "",
        port,
        &props[..],
    )?
    .enable_addr_auto();
    daemon.register(info)?;
    let events = daemon.browse(SERVICE_TYPE)?;
    let rt = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("wattmesh-mdns".into())
        .spawn(move || {
            let mut dialled: HashSet<(PeerId, Multiaddr)> = HashSet::new();
            while let Ok(ev) = events.recv() {
                let ServiceEvent::ServiceResolved(svc) = ev else {
                    continue;
                };
                if svc.txt_properties.get_property_val_str("n") != Some(tag.as_str()) {
                    continue;
                }
                let Some(p) = svc
                    .txt_properties
                    .get_property_val_str("p")
                    .and_then(|p| p.parse::<PeerId>().ok())
                else {
                    continue;
                };
                if p == local {
                    continue;
                }
                for ip in svc.get_addresses_v4() {
                    let Ok(addr) =
                        format!("/ip4/{ip}/tcp/{}/p2p/{p}", svc.get_port()).parse::<Multiaddr>()
                    else {
                        continue;
                    };
                    if !dialled.insert((p, addr.clone())) || dialled.len() > 4096 {
                        continue;
                    }
                    info!(%addr, "found a neighbour on the LAN");
                    let net = net.clone();
                    rt.spawn(async move {
                        if let Ok(Err(e)) = net.dial(addr).await {
                            debug!("dialling a discovered neighbour failed: {e}");
                        }
                    });
                }
            }
            debug!("mdns browse ended");
        })?;
    if cfg.interfaces.is_empty() {
        warn!("mDNS runs on all interfaces");
    }
    Ok(Mdns { daemon })
}
