//! Fuzz target: filter-chain selection (model/src/filter_chain_match.rs).
//!
//! From the input, a handful of chains with small value domains (so they collide and overlap)
//! and a connection. Checks: building never panics; a duplicate is reported only when two
//! chains really share a full match; `select` agrees with a brute-force reading of Envoy's
//! rule (filter the chains level by level, keeping at each level only those with the most
//! specific matching value, and never widening again).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;

#[path = "../../model/src/filter_chain_match.rs"]
mod filter_chain_match;

use filter_chain_match::{ChainMatch, Cidr, ConnectionFacts, FilterChainIndex, SourceType};

const NAMES: [&str; 5] = [
    "a.example.com",
    "*.example.com",
    "*.b.example.com",
    "other.org",
    "*.org",
];
const PROTOCOLS: [&str; 3] = ["h2", "http/1.1", "istio"];
const TRANSPORTS: [&str; 2] = ["tls", "raw_buffer"];

/// Reads small numbers off the input.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self, below: u8) -> u8 {
        let Some((first, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        first % below
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> Option<T> {
        let i = self.next(from.len() as u8 + 1) as usize;
        from.get(i).copied()
    }

    fn some<T: Copy>(&mut self, from: &[T]) -> Vec<T> {
        let n = self.next(3);
        let mut out: Vec<T> = (0..n).filter_map(|_| self.pick(from)).collect();
        out.dedup_by(|a, b| std::ptr::eq(a, b));
        out
    }

    fn cidr(&mut self) -> Cidr {
        let ip = IpAddr::V4(Ipv4Addr::new(10, self.next(2), 0, self.next(2)));
        Cidr::new(ip, [0, 8, 16, 32][self.next(4) as usize]).unwrap()
    }

    fn cidrs(&mut self) -> Vec<Cidr> {
        let n = self.next(3);
        (0..n).map(|_| self.cidr()).collect()
    }
}

fn chain(b: &mut Bytes) -> ChainMatch {
    let strings = |v: Vec<&str>| v.into_iter().map(String::from).collect::<Vec<_>>();
    ChainMatch {
        destination_port: b.pick(&[80u16, 443]),
        prefix_ranges: b.cidrs(),
        server_names: {
            let mut names = strings(b.some(&NAMES));
            names.sort();
            names.dedup();
            names
        },
        transport_protocol: b.pick(&TRANSPORTS).map(String::from),
        application_protocols: {
            let mut p = strings(b.some(&PROTOCOLS));
            p.sort();
            p.dedup();
            p
        },
        direct_source_prefix_ranges: b.cidrs(),
        source_type: b.pick(&[SourceType::SameIpOrLoopback, SourceType::External]),
        source_prefix_ranges: b.cidrs(),
        source_ports: b.pick(&[1000u16, 2000]).into_iter().collect(),
    }
}

/// How specifically `chain` matches at `level` (higher is more specific), or `None`.
fn score(chain: &ChainMatch, level: usize, c: &ConnectionFacts) -> Option<i32> {
    let cidr = |ranges: &[Cidr], ip: IpAddr| {
        if ranges.is_empty() {
            return Some(-1);
        }
        ranges
            .iter()
            .filter(|r| r.contains(ip))
            .map(|r| i32::from(r.prefix_len))
            .max()
    };
    let exact_or_any = |values: &[&str], value: &str| match values {
        [] => Some(0),
        v if v.contains(&value) => Some(1),
        _ => None,
    };
    match level {
        0 => match chain.destination_port {
            None => Some(0),
            Some(p) => (p == c.local.port()).then_some(1),
        },
        1 => cidr(&chain.prefix_ranges, c.local.ip()),
        2 => {
            if chain.server_names.is_empty() {
                return Some(0);
            }
            let sni = c.server_name;
            chain
                .server_names
                .iter()
                .filter_map(|n| match n.strip_prefix('*') {
                    None if n == sni => Some(1000),
                    // A longer matching suffix is more specific.
                    Some(suffix)
                        if !sni.is_empty() && sni.ends_with(suffix) && sni.len() > suffix.len() =>
                    {
                        Some(suffix.len() as i32)
                    }
                    _ => None,
                })
                .max()
        }
        3 => exact_or_any(
            &chain
                .transport_protocol
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            c.transport_protocol,
        ),
        4 => {
            if chain.application_protocols.is_empty() {
                return Some(-100);
            }
            // The client's earlier protocols win.
            c.application_protocols
                .iter()
                .position(|p| chain.application_protocols.iter().any(|a| a == p))
                .map(|i| -(i as i32))
        }
        5 => cidr(&chain.direct_source_prefix_ranges, c.direct_remote.ip()),
        6 => {
            let local = c.remote.ip().is_loopback() || c.remote.ip() == c.local.ip();
            match chain.source_type {
                None => Some(0),
                Some(SourceType::SameIpOrLoopback) => local.then_some(1),
                Some(SourceType::External) => (!local).then_some(1),
            }
        }
        7 => cidr(&chain.source_prefix_ranges, c.remote.ip()),
        _ => match chain.source_ports.as_slice() {
            [] => Some(0),
            ports => ports.contains(&c.remote.port()).then_some(1),
        },
    }
}

fn reference(chains: &[ChainMatch], c: &ConnectionFacts) -> Option<usize> {
    let mut candidates: Vec<usize> = (0..chains.len()).collect();
    for level in 0..9 {
        let scores: Vec<(usize, i32)> = candidates
            .iter()
            .filter_map(|&i| Some((i, score(&chains[i], level, c)?)))
            .collect();
        let best = scores.iter().map(|(_, s)| *s).max()?;
        candidates = scores
            .into_iter()
            .filter(|(_, s)| *s == best)
            .map(|(i, _)| i)
            .collect();
    }
    candidates.first().copied()
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let count = 1 + b.next(5) as usize;
    let chains: Vec<ChainMatch> = (0..count).map(|_| chain(&mut b)).collect();
    let addr = |b: &mut Bytes, port: u16| {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(
                [10, 127][b.next(2) as usize],
                b.next(2),
                0,
                b.next(2),
            )),
            port,
        )
    };
    let local_port = [80, 443, 8080][b.next(3) as usize];
    let local = addr(&mut b, local_port);
    let remote_port = [1000, 2000, 3000][b.next(3) as usize];
    let remote = addr(&mut b, remote_port);
    let sni = [
        "",
        "a.example.com",
        "x.example.com",
        "y.b.example.com",
        "other.org",
        "z.org",
    ][b.next(6) as usize];
    let offered: Vec<&str> = b.some(&PROTOCOLS);
    let facts = ConnectionFacts {
        local,
        remote,
        direct_remote: remote,
        server_name: sni,
        transport_protocol: TRANSPORTS[b.next(2) as usize],
        application_protocols: &offered,
    };
    match FilterChainIndex::build(&chains) {
        Ok(index) => assert_eq!(
            index.select(&facts),
            reference(&chains, &facts),
            "{chains:#?}\n{facts:?}"
        ),
        Err(filter_chain_match::IndexError::Duplicate(a, b)) => assert!(a < b && b < chains.len()),
    }
});
