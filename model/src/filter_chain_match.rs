//! Domain model: filter-chain selection. Envoy's `FilterChainMatch` criteria compiled into a
//! tree, one level per criterion in Envoy's order; a connection walks it taking, at each
//! level, the most specific entry that matches and never backtracks (so a chain that matches
//! a more specific destination port or SNI hides the less specific ones, as in Envoy). Built
//! (and checked for duplicate matches) by the agent; walking it allocates nothing.
use std::net::{IpAddr, SocketAddr};

/// `FilterChainMatch.source_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceType {
    /// The peer is this host: same IP as the local address, or loopback.
    SameIpOrLoopback,
    External,
}

/// An address range (`CidrRange`), normalised: host bits beyond the prefix are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    /// The range `address/prefix_len`; `None` when the length exceeds the family's width.
    pub fn new(address: IpAddr, prefix_len: u8) -> Option<Self> {
        let width = if address.is_ipv4() { 32 } else { 128 };
        (prefix_len <= width).then(|| Self {
            address: mask(address, prefix_len),
            prefix_len,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.address.is_ipv4() && mask(ip, self.prefix_len) == self.address
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(bits.into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(bits.into())
        }
    }
}

/// One chain's criteria; an empty list means "any" for that criterion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainMatch {
    pub destination_port: Option<u16>,
    pub prefix_ranges: Vec<Cidr>,
    /// Lowercase; a wildcard `*.example.com` is kept as `*.example.com`.
    pub server_names: Vec<String>,
    pub transport_protocol: Option<String>,
    pub application_protocols: Vec<String>,
    pub direct_source_prefix_ranges: Vec<Cidr>,
    pub source_type: Option<SourceType>,
    pub source_prefix_ranges: Vec<Cidr>,
    pub source_ports: Vec<u16>,
}

impl ChainMatch {
    /// Whether a criterion needs the TLS inspector's findings (Envoy then adds the inspector
    /// to the listener if it is not configured).
    pub fn needs_tls_inspector(&self) -> bool {
        !self.server_names.is_empty()
            || self.transport_protocol.as_deref() == Some("tls")
            || (self.transport_protocol.is_none() && !self.application_protocols.is_empty())
    }
}

/// What a connection offers for matching.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionFacts<'a> {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The directly connected peer (differs from `remote` only behind a PROXY protocol).
    pub direct_remote: SocketAddr,
    /// The SNI, lowercase; empty without one.
    pub server_name: &'a str,
    /// `tls` or `raw_buffer` (Envoy's default when no listener filter detected one).
    pub transport_protocol: &'a str,
    /// ALPN protocols offered (TLS) or detected (`http/1.1`, `h2c`), in the client's order.
    pub application_protocols: &'a [&'a str],
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Any,
    Port(u16),
    Cidr(Cidr),
    /// An exact name, or a wildcard stored as its suffix with the dot (`.example.com`).
    Name(String),
    Source(SourceType),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    DestinationPort,
    DestinationIp,
    ServerName,
    TransportProtocol,
    ApplicationProtocol,
    DirectSourceIp,
    SourceType,
    SourceIp,
    SourcePort,
}

const LEVELS: [Level; 9] = [
    Level::DestinationPort,
    Level::DestinationIp,
    Level::ServerName,
    Level::TransportProtocol,
    Level::ApplicationProtocol,
    Level::DirectSourceIp,
    Level::SourceType,
    Level::SourceIp,
    Level::SourcePort,
];

/// A level's entries: the next node's index, or at the last level the chain's index.
#[derive(Debug, Default)]
struct Node {
    entries: Vec<(Key, usize)>,
}

impl Node {
    fn get(&self, key: &Key) -> Option<usize> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// Why chains cannot be indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexError {
    /// Two chains match exactly the same connections (the indexes of both).
    Duplicate(usize, usize),
}

/// The compiled selection tree of a listener's chains.
#[derive(Debug)]
pub struct FilterChainIndex {
    nodes: Vec<Node>,
    /// Some chain matches on the local address (destination port or IP, or a source type,
    /// which compares with it): only then is a wildcard listener's accepted address read.
    reads_local: bool,
}

impl FilterChainIndex {
    /// Indexes `chains` (by position); fails when two of them overlap completely.
    pub fn build(chains: &[ChainMatch]) -> Result<Self, IndexError> {
        let mut index = Self {
            nodes: vec![Node::default()],
            reads_local: chains.iter().any(|c| {
                c.destination_port.is_some()
                    || !c.prefix_ranges.is_empty()
                    || c.source_type.is_some()
            }),
        };
        for (i, chain) in chains.iter().enumerate() {
            index.insert(0, 0, chain, i)?;
        }
        Ok(index)
    }

    fn insert(
        &mut self,
        node: usize,
        depth: usize,
        chain: &ChainMatch,
        id: usize,
    ) -> Result<(), IndexError> {
        let last = depth + 1 == LEVELS.len();
        for key in keys(LEVELS[depth], chain) {
            match self.nodes[node].get(&key) {
                Some(existing) if last => return Err(IndexError::Duplicate(existing, id)),
                Some(child) => self.insert(child, depth + 1, chain, id)?,
                None if last => self.nodes[node].entries.push((key, id)),
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[node].entries.push((key, child));
                    self.insert(child, depth + 1, chain, id)?;
                }
            }
        }
        Ok(())
    }

    /// Whether selection looks at the connection's local address.
    pub fn reads_local(&self) -> bool {
        self.reads_local
    }

    /// The index of the chain for this connection, if one matches.
    pub fn select(&self, facts: &ConnectionFacts<'_>) -> Option<usize> {
        let mut at = 0;
        for level in LEVELS {
            at = best(&self.nodes[at], level, facts)?;
        }
        Some(at)
    }
}

/// The keys a chain is filed under at `level` (`Any` when it leaves the criterion open).
fn keys(level: Level, chain: &ChainMatch) -> Vec<Key> {
    let cidrs = |ranges: &[Cidr]| ranges.iter().map(|c| Key::Cidr(*c)).collect::<Vec<_>>();
    let names = |names: &[String]| names.iter().map(|n| Key::Name(n.clone())).collect();
    let mut keys: Vec<Key> = match level {
        Level::DestinationPort => chain.destination_port.map(Key::Port).into_iter().collect(),
        Level::DestinationIp => cidrs(&chain.prefix_ranges),
        Level::ServerName => chain
            .server_names
            .iter()
            .map(|n| Key::Name(n.strip_prefix('*').unwrap_or(n).to_string()))
            .collect(),
        Level::TransportProtocol => names(chain.transport_protocol.as_slice()),
        Level::ApplicationProtocol => names(&chain.application_protocols),
        Level::DirectSourceIp => cidrs(&chain.direct_source_prefix_ranges),
        Level::SourceType => chain.source_type.map(Key::Source).into_iter().collect(),
        Level::SourceIp => cidrs(&chain.source_prefix_ranges),
        Level::SourcePort => chain.source_ports.iter().map(|p| Key::Port(*p)).collect(),
    };
    if keys.is_empty() {
        keys.push(Key::Any);
    }
    keys.dedup();
    keys
}

/// The most specific entry of `node` matching the connection at `level`.
fn best(node: &Node, level: Level, facts: &ConnectionFacts<'_>) -> Option<usize> {
    let exact = |key: Key| node.get(&key);
    let any = || node.get(&Key::Any);
    match level {
        Level::DestinationPort => exact(Key::Port(facts.local.port())).or_else(any),
        Level::DestinationIp => longest_prefix(node, facts.local.ip()),
        Level::ServerName => server_name(node, facts.server_name).or_else(any),
        Level::TransportProtocol => named(node, facts.transport_protocol).or_else(any),
        Level::ApplicationProtocol => facts
            .application_protocols
            .iter()
            .find_map(|p| named(node, p))
            .or_else(any),
        Level::DirectSourceIp => longest_prefix(node, facts.direct_remote.ip()),
        Level::SourceType => {
            let kind = if is_local(facts) {
                SourceType::SameIpOrLoopback
            } else {
                SourceType::External
            };
            exact(Key::Source(kind)).or_else(any)
        }
        Level::SourceIp => longest_prefix(node, facts.remote.ip()),
        Level::SourcePort => exact(Key::Port(facts.remote.port())).or_else(any),
    }
}

/// Compares names without allocating a key.
fn named(node: &Node, name: &str) -> Option<usize> {
    node.entries.iter().find_map(|(k, v)| match k {
        Key::Name(n) if n == name => Some(*v),
        _ => None,
    })
}

/// The exact name, then each wildcard suffix from the longest (`.b.example.com` before
/// `.example.com` before `.com`).
fn server_name(node: &Node, sni: &str) -> Option<usize> {
    if sni.is_empty() {
        return None;
    }
    named(node, sni).or_else(|| {
        sni.char_indices()
            .skip(1)
            .filter(|&(i, c)| c == '.' && i + 1 < sni.len())
            .find_map(|(i, _)| named(node, &sni[i..]))
    })
}

fn longest_prefix(node: &Node, ip: IpAddr) -> Option<usize> {
    let mut best: Option<(i16, usize)> = None;
    for (key, value) in &node.entries {
        let len = match key {
            Key::Cidr(c) if c.contains(ip) => i16::from(c.prefix_len),
            Key::Any => -1,
            _ => continue,
        };
        if best.is_none_or(|(l, _)| len > l) {
            best = Some((len, *value));
        }
    }
    best.map(|(_, v)| v)
}

fn is_local(facts: &ConnectionFacts<'_>) -> bool {
    let peer = facts.remote.ip();
    peer.is_loopback() || peer == facts.local.ip()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(port: u16, sni: &'a str, tp: &'a str, alpn: &'a [&'a str]) -> ConnectionFacts<'a> {
        ConnectionFacts {
            local: SocketAddr::from(([10, 0, 0, 1], port)),
            remote: SocketAddr::from(([192, 168, 1, 7], 40000)),
            direct_remote: SocketAddr::from(([192, 168, 1, 7], 40000)),
            server_name: sni,
            transport_protocol: tp,
            application_protocols: alpn,
        }
    }

    fn names(names: &[&str]) -> ChainMatch {
        ChainMatch {
            server_names: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn server_names_exact_then_longest_wildcard_then_any() {
        let chains = [
            names(&["a.example.com"]),
            names(&["*.example.com"]),
            names(&["*.b.example.com"]),
            names(&[]),
        ];
        let index = FilterChainIndex::build(&chains).unwrap();
        let pick = |sni| index.select(&facts(443, sni, "tls", &[]));
        assert_eq!(pick("a.example.com"), Some(0));
        assert_eq!(pick("x.example.com"), Some(1));
        assert_eq!(pick("x.y.example.com"), Some(1));
        assert_eq!(pick("x.b.example.com"), Some(2));
        assert_eq!(pick("other.org"), Some(3));
        assert_eq!(pick(""), Some(3));
    }

    #[test]
    fn a_more_specific_level_hides_less_specific_chains_without_backtracking() {
        // Port 443 has a chain for tls only: a raw connection to 443 matches nothing,
        // although the port-less chain would take raw connections.
        let chains = [
            ChainMatch {
                destination_port: Some(443),
                transport_protocol: Some("tls".into()),
                ..Default::default()
            },
            ChainMatch {
                transport_protocol: Some("raw_buffer".into()),
                ..Default::default()
            },
        ];
        let index = FilterChainIndex::build(&chains).unwrap();
        assert_eq!(index.select(&facts(443, "", "tls", &[])), Some(0));
        assert_eq!(index.select(&facts(443, "", "raw_buffer", &[])), None);
        assert_eq!(index.select(&facts(80, "", "raw_buffer", &[])), Some(1));
        assert_eq!(index.select(&facts(80, "", "tls", &[])), None);
    }

    #[test]
    fn application_protocols_in_client_order_then_any() {
        let chains = [
            ChainMatch {
                application_protocols: vec!["h2".into()],
                ..Default::default()
            },
            ChainMatch {
                application_protocols: vec!["http/1.1".into()],
                ..Default::default()
            },
            ChainMatch::default(),
        ];
        let index = FilterChainIndex::build(&chains).unwrap();
        let pick = |alpn: &[&str]| index.select(&facts(443, "", "tls", alpn));
        assert_eq!(pick(&["http/1.1", "h2"]), Some(1));
        assert_eq!(pick(&["h2", "http/1.1"]), Some(0));
        assert_eq!(pick(&["spdy/3"]), Some(2));
        assert_eq!(pick(&[]), Some(2));
    }

    #[test]
    fn prefix_ranges_take_the_longest_match_and_source_criteria_apply() {
        let cidr = |a: [u8; 4], l| Cidr::new(IpAddr::from(a), l).unwrap();
        let chains = [
            ChainMatch {
                prefix_ranges: vec![cidr([10, 0, 0, 0], 8)],
                ..Default::default()
            },
            ChainMatch {
                prefix_ranges: vec![cidr([10, 0, 0, 0], 24)],
                source_ports: vec![40000],
                ..Default::default()
            },
            ChainMatch {
                prefix_ranges: vec![cidr([10, 0, 0, 0], 24)],
                source_type: Some(SourceType::SameIpOrLoopback),
                ..Default::default()
            },
        ];
        let index = FilterChainIndex::build(&chains).unwrap();
        assert_eq!(index.select(&facts(1, "", "raw_buffer", &[])), Some(1));
        let mut other = facts(1, "", "raw_buffer", &[]);
        other.local = SocketAddr::from(([10, 9, 0, 1], 1));
        assert_eq!(index.select(&other), Some(0));
        let mut local = facts(1, "", "raw_buffer", &[]);
        local.remote = SocketAddr::from(([127, 0, 0, 1], 5));
        assert_eq!(index.select(&local), Some(2));
        let mut external_other_port = facts(1, "", "raw_buffer", &[]);
        external_other_port.remote.set_port(1);
        assert_eq!(index.select(&external_other_port), None);
    }

    #[test]
    fn identical_matches_are_rejected_even_through_one_shared_value() {
        let chains = [names(&["a.com", "b.com"]), names(&["c.com", "b.com"])];
        assert_eq!(
            FilterChainIndex::build(&chains).unwrap_err(),
            IndexError::Duplicate(0, 1)
        );
        assert!(FilterChainIndex::build(&[ChainMatch::default(), ChainMatch::default()]).is_err());
        assert!(FilterChainIndex::build(&[names(&["a.com"]), names(&["*.a.com"])]).is_ok());
    }

    #[test]
    fn cidr_normalises_and_checks_family() {
        let c = Cidr::new("10.1.2.3".parse().unwrap(), 16).unwrap();
        assert_eq!(c.address, "10.1.0.0".parse::<IpAddr>().unwrap());
        assert!(c.contains("10.1.200.1".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert!(Cidr::new("::".parse().unwrap(), 0)
            .unwrap()
            .contains("::1".parse().unwrap()));
        assert!(Cidr::new("10.0.0.0".parse().unwrap(), 33).is_none());
    }
}
