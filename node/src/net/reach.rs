//! Reach: how this node finds its way to peers behind home routers.
//!
//! [`AddressBook`] is a small `NetworkBehaviour` that remembers each peer's addresses (from
//! identify, from connections we made, and from [`super::NetHandle::add_addresses`]) and hands
//! them to the swarm whenever a peer is dialled by its id alone. When it knows no way to a peer
//! it also offers circuit addresses through the relays this node is connected to, so a dial
//! by peer id reaches a home behind NAT through any reachable member.
//!
//! Everything here is bounded: addresses per peer, peers in total, relays per dial, and the
//! length of an address, because addresses arrive from the network.

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Instant;

/// The most addresses remembered per peer; the newest win.
pub const MAX_ADDRS_PER_PEER: usize = 8;
/// The most peers in the address book; the least recently updated is forgotten first.
pub const MAX_PEERS: usize = 1024;
/// The most relays a dial by peer id tries circuits through.
pub const MAX_RELAYS_PER_DIAL: usize = 4;
/// The longest address accepted, in bytes of its binary form.
pub const MAX_ADDR_BYTES: usize = 256;

/// When a node asks reachable members for relay reservations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReservationMode {
    /// Until AutoNAT, UPnP or a configured external address shows that peers can dial this
    /// node; dropped once they can.
    Auto,
    /// Always (a node that knows it is behind NAT).
    Always,
    /// Never (a node that knows it is reachable, or that must not depend on others).
    Never,
}

/// How a connection reaches a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reach {
    /// A direct TCP connection, dialled or accepted.
    Direct,
    /// A direct TCP connection that hole punching (DCUtR) made after a relayed one.
    HolePunched,
    /// Through another member's circuit relay.
    Relayed,
}

impl Reach {
    /// The name shown in the status: `direct`, `hole-punched` or `relayed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Direct => "direct",
            Reach::HolePunched => "hole-punched",
            Reach::Relayed => "relayed",
        }
    }

    /// Preference when a peer has several connections: a direct one beats a relayed one.
    pub fn rank(self) -> u8 {
        match self {
            Reach::HolePunched => 2,
            Reach::Direct => 2,
            Reach::Relayed => 1,
        }
    }
}

/// Whether an address goes through a circuit relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// Whether an address is on the loopback interface.
pub fn is_loopback(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// The last `/p2p/<id>` of an address: the peer it leads to (for a circuit address, the
/// peer behind the relay, not the relay).
pub fn target_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter()
        .filter_map(|p| match p {
            Protocol::P2p(id) => Some(id),
            _ => None,
        })
        .last()
}

/// An address in the form the book keeps for `peer`: without the trailing `/p2p/<peer>`.
/// `None` for an address that is too long, leads to another peer, or cannot be dialled
/// (unspecified IP, port 0, no TCP).
pub fn normalise(peer: &PeerId, addr: &Multiaddr) -> Option<Multiaddr> {
    if addr.len() > MAX_ADDR_BYTES {
        return None;
    }
    let mut a = addr.clone();
    if let Some(Protocol::P2p(id)) = a.iter().last() {
        if id != *peer {
            return None;
        }
        a.pop();
    }
    let mut tcp = false;
    for p in a.iter() {
        match p {
            Protocol::Ip4(ip) if ip.is_unspecified() || ip.is_multicast() => return None,
            // Link-local IPv6 needs a zone, which a multiaddr cannot carry.
            Protocol::Ip6(ip)
                if ip.is_unspecified()
                    || ip.is_multicast()
                    || (ip.segments()[0] & 0xffc0) == 0xfe80 =>
            {
                return None;
            }
            Protocol::Tcp(0) => return None,
            Protocol::Tcp(_) => tcp = true,
            Protocol::P2p(id) if id == *peer => return None,
            _ => {}
        }
    }
    if !tcp {
        return None;
    }
    // A circuit address must end with `/p2p-circuit` once the target is stripped, and may
    // hold only one circuit (relays do not chain).
    let circuits = a
        .iter()
        .filter(|p| matches!(p, Protocol::P2pCircuit))
        .count();
    if circuits > 1 || (circuits == 1 && !matches!(a.iter().last(), Some(Protocol::P2pCircuit))) {
        return None;
    }
    Some(a)
}

#[derive(Debug)]
struct Entry {
    addrs: VecDeque<Multiaddr>,
    touched: Instant,
}

/// The address book behaviour. It makes no connections itself and has no handler.
#[derive(Debug)]
pub struct AddressBook {
    local: PeerId,
    peers: HashMap<PeerId, Entry>,
    /// Connected peers that serve circuit relay v2, with the direct address we reach them at.
    relays: HashMap<PeerId, Multiaddr>,
}

impl AddressBook {
    /// An empty book for the node `local`.
    pub fn new(local: PeerId) -> AddressBook {
        AddressBook {
            local,
            peers: HashMap::new(),
            relays: HashMap::new(),
        }
    }

    /// Remembers `addr` for `peer` (newest first). Returns whether it was accepted.
    pub fn add(&mut self, peer: PeerId, addr: &Multiaddr) -> bool {
        if peer == self.local {
            return false;
        }
        let Some(a) = normalise(&peer, addr) else {
            return false;
        };
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            if let Some(oldest) = self
                .peers
                .iter()
                .min_by_key(|(_, e)| e.touched)
                .map(|(p, _)| *p)
            {
                self.peers.remove(&oldest);
            }
        }
        let e = self.peers.entry(peer).or_insert_with(|| Entry {
            addrs: VecDeque::new(),
            touched: Instant::now(),
        });
        e.touched = Instant::now();
        e.addrs.retain(|x| x != &a);
        e.addrs.push_front(a);
        e.addrs.truncate(MAX_ADDRS_PER_PEER);
        true
    }

    /// The addresses known for `peer`, newest first, direct ones before circuit ones.
    pub fn addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let Some(e) = self.peers.get(peer) else {
            return Vec::new();
        };
        let (mut direct, relayed): (Vec<_>, Vec<_>) =
            e.addrs.iter().cloned().partition(|a| !is_relayed(a));
        direct.extend(relayed);
        direct
    }

    /// Circuit addresses to `peer` through the connected relays (not through `peer` itself).
    pub fn circuits(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut relays: Vec<_> = self.relays.iter().filter(|(r, _)| *r != peer).collect();
        relays.sort_by_key(|(r, _)| **r);
        relays
            .into_iter()
            .take(MAX_RELAYS_PER_DIAL)
            .map(|(r, a)| a.clone().with(Protocol::P2p(*r)).with(Protocol::P2pCircuit))
            .collect()
    }

    /// Records whether a connected peer serves as a relay, and the direct address we reach
    /// it at (`None`: it does not, or no longer).
    pub fn set_relay(&mut self, peer: PeerId, addr: Option<Multiaddr>) {
        match addr
            .and_then(|a| normalise(&peer, &a))
            .filter(|a| !is_relayed(a))
        {
            Some(a) => {
                self.relays.insert(peer, a);
            }
            None => {
                self.relays.remove(&peer);
            }
        }
    }

    /// The connected relays and their addresses.
    pub fn relays(&self) -> impl Iterator<Item = (&PeerId, &Multiaddr)> {
        self.relays.iter()
    }

    /// How many peers the book holds.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

impl NetworkBehaviour for AddressBook {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        // An address we dialled (not a hole punch, whose address is the peer's NAT mapping
        // of the moment) is worth remembering.
        if role == Endpoint::Dialer {
            self.add(peer, addr);
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        given: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let Some(peer) = peer else {
            return Ok(Vec::new());
        };
        let mut out = self.addresses(&peer);
        // Circuits only for a plain dial by peer id: a dial that names its addresses (a relay
        // being dialled, a hole punch) must not turn into a relayed connection.
        if given.is_empty() && role == Endpoint::Dialer {
            // (The swarm drops duplicates.)
            out.extend(self.circuits(&peer));
        } else {
            out.retain(|a| !is_relayed(a));
        }
        Ok(out)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(c) = event {
            if c.remaining_established == 0 {
                self.relays.remove(&c.peer_id);
            }
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        crate::net::keypair(&wattmesh_protocol::NodeKey::from_secret(&[n; 32]))
            .public()
            .to_peer_id()
    }

    #[test]
    fn addresses_are_normalised_and_bounded() {
        let (me, a, b) = (peer(1), peer(2), peer(3));
        let mut book = AddressBook::new(me);
        let with_id: Multiaddr = format!("/ip4/10.0.0.2/tcp/4100/p2p/{a}").parse().unwrap();
        assert!(book.add(a, &with_id));
        assert_eq!(
            book.addresses(&a),
            vec!["/ip4/10.0.0.2/tcp/4100".parse::<Multiaddr>().unwrap()]
        );
        // Another peer's address, unspecified IPs, port 0, ourselves: refused.
        assert!(!book.add(b, &with_id));
        assert!(!book.add(a, &"/ip4/0.0.0.0/tcp/4100".parse().unwrap()));
        assert!(!book.add(a, &"/ip4/10.0.0.2/tcp/0".parse().unwrap()));
        assert!(!book.add(me, &"/ip4/10.0.0.9/tcp/1".parse().unwrap()));
        assert!(!book.add(a, &"/dns4/example.invalid".parse().unwrap()));
        assert!(!book.add(a, &"/ip6/fe80::1/tcp/4100".parse().unwrap()));
        assert!(book.add(a, &"/ip6/2001:db8::1/tcp/4100".parse().unwrap()));
        // Many addresses: the newest eight stay.
        for port in 1..=20u16 {
            assert!(book.add(a, &format!("/ip4/10.0.0.3/tcp/{port}").parse().unwrap()));
        }
        let addrs = book.addresses(&a);
        assert_eq!(addrs.len(), MAX_ADDRS_PER_PEER);
        assert_eq!(
            addrs[0],
            "/ip4/10.0.0.3/tcp/20".parse::<Multiaddr>().unwrap()
        );
    }

    #[test]
    fn the_book_forgets_the_stalest_peer_when_full() {
        let mut book = AddressBook::new(peer(1));
        let first = PeerId::random();
        book.add(first, &"/ip4/10.0.0.1/tcp/1".parse().unwrap());
        for _ in 0..MAX_PEERS {
            book.add(PeerId::random(), &"/ip4/10.0.0.1/tcp/1".parse().unwrap());
        }
        assert_eq!(book.len(), MAX_PEERS);
        assert!(book.addresses(&first).is_empty());
    }

    #[test]
    fn circuits_go_through_connected_relays_but_not_the_target() {
        let (me, relay, target) = (peer(1), peer(2), peer(3));
        let mut book = AddressBook::new(me);
        book.set_relay(relay, Some("/ip4/25.0.0.1/tcp/4100".parse().unwrap()));
        let c = book.circuits(&target);
        assert_eq!(
            c,
            vec![
                format!("/ip4/25.0.0.1/tcp/4100/p2p/{relay}/p2p-circuit")
                    .parse::<Multiaddr>()
                    .unwrap()
            ]
        );
        assert!(book.circuits(&relay).is_empty());
        // A circuit address learned for the target is kept in its normalised form.
        let learned: Multiaddr =
            format!("/ip4/25.0.0.1/tcp/4100/p2p/{relay}/p2p-circuit/p2p/{target}")
                .parse()
                .unwrap();
        assert!(book.add(target, &learned));
        assert_eq!(book.addresses(&target), c);
        // Chained circuits are refused.
        let chained: Multiaddr = format!("{}/p2p/{relay}/p2p-circuit", c[0]).parse().unwrap();
        assert!(!book.add(target, &chained));
        book.set_relay(relay, None);
        assert!(book.circuits(&target).is_empty());
    }
}
