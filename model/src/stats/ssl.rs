//! Stats: Envoy's TLS stats of a listener or cluster (`<scope>.ssl.*`): handshakes and failures
//! by reason, and the negotiated version, cipher and key-exchange group, listed (as Envoy
//! lists them) only once used. Per-shard cells, summed when read.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{HistogramValue, Padded, Scope, StatKind, StatValue};

/// Versions counted, by Envoy's names (`ssl.versions.TLSv1.3`).
pub const VERSIONS: [&str; 2] = ["TLSv1.2", "TLSv1.3"];
/// Ciphers counted, by Envoy's (BoringSSL's) names; the model maps rustls' suites onto them.
pub const CIPHERS: [&str; 9] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305",
];
/// Key-exchange groups counted, by Envoy's names (`ssl.curves.X25519`).
pub const CURVES: [&str; 4] = ["X25519", "P-256", "P-384", "X25519MLKEM768"];

/// Why a handshake failed, as Envoy counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Any failure not counted under a verification reason (`ssl.connection_error`).
    Connection,
    /// A required peer certificate was not presented (`ssl.fail_verify_no_cert`).
    NoCertificate,
    /// The peer's certificate did not verify: untrusted, expired, revoked
    /// (`ssl.fail_verify_error`).
    VerifyError,
    /// The peer's certificate has no subject alt name the config accepts
    /// (`ssl.fail_verify_san`).
    VerifySan,
}

#[derive(Debug, Default)]
pub struct SslCells {
    pub handshake: AtomicU64,
    pub connection_error: AtomicU64,
    pub no_certificate: AtomicU64,
    pub fail_verify_no_cert: AtomicU64,
    pub fail_verify_error: AtomicU64,
    pub fail_verify_san: AtomicU64,
    pub session_reused: AtomicU64,
    versions: [AtomicU64; VERSIONS.len()],
    ciphers: [AtomicU64; CIPHERS.len()],
    curves: [AtomicU64; CURVES.len()],
}

impl SslCells {
    /// Counts a completed handshake with what it negotiated (indexes into the name tables).
    pub fn handshake(
        &self,
        version: Option<usize>,
        cipher: Option<usize>,
        curve: Option<usize>,
        resumed: bool,
    ) {
        super::inc(&self.handshake);
        if resumed {
            super::inc(&self.session_reused);
        }
        let count = |cells: &[AtomicU64], i: Option<usize>| {
            if let Some(cell) = i.and_then(|i| cells.get(i)) {
                super::inc(cell);
            }
        };
        count(&self.versions, version);
        count(&self.ciphers, cipher);
        count(&self.curves, curve);
    }

    /// Counts a failed handshake: a verification failure under its reason, anything else as
    /// a connection error (Envoy counts each failure once).
    pub fn failure(&self, failure: HandshakeFailure) {
        match failure {
            HandshakeFailure::Connection => super::inc(&self.connection_error),
            HandshakeFailure::NoCertificate => super::inc(&self.fail_verify_no_cert),
            HandshakeFailure::VerifyError => super::inc(&self.fail_verify_error),
            HandshakeFailure::VerifySan => super::inc(&self.fail_verify_san),
        }
    }
}

/// A group of named counters: its name, the counter names, and where its cells are.
type NamedCells = (
    &'static str,
    &'static [&'static str],
    fn(&SslCells) -> &[AtomicU64],
);

#[derive(Debug)]
pub struct SslStats {
    prefix: String,
    shards: Box<[Padded<SslCells>]>,
}

impl SslStats {
    #[inline]
    pub fn shard(&self, shard: usize) -> &SslCells {
        &self.shards[shard].0
    }

    fn sum(&self, cell: impl Fn(&SslCells) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |acc, s| acc.wrapping_add(cell(&s.0).load(Relaxed)))
    }
}

impl Scope for SslStats {
    fn new(prefix: String, shards: usize) -> Self {
        Self {
            prefix,
            shards: (0..shards.max(1)).map(|_| Default::default()).collect(),
        }
    }

    fn read(&self, out: &mut Vec<StatValue>) {
        let mut push = |name: String, value: u64| {
            out.push(StatValue {
                name,
                kind: StatKind::Counter,
                value: value as i64,
            })
        };
        let p = &self.prefix;
        push(format!("{p}.handshake"), self.sum(|c| &c.handshake));
        push(
            format!("{p}.connection_error"),
            self.sum(|c| &c.connection_error),
        );
        push(
            format!("{p}.no_certificate"),
            self.sum(|c| &c.no_certificate),
        );
        push(
            format!("{p}.fail_verify_no_cert"),
            self.sum(|c| &c.fail_verify_no_cert),
        );
        push(
            format!("{p}.fail_verify_error"),
            self.sum(|c| &c.fail_verify_error),
        );
        push(
            format!("{p}.fail_verify_san"),
            self.sum(|c| &c.fail_verify_san),
        );
        push(
            format!("{p}.session_reused"),
            self.sum(|c| &c.session_reused),
        );
        let tables: [NamedCells; 3] = [
            ("versions", &VERSIONS, |c| &c.versions),
            ("ciphers", &CIPHERS, |c| &c.ciphers),
            ("curves", &CURVES, |c| &c.curves),
        ];
        for (group, names, cells) in tables {
            for (i, name) in names.iter().enumerate() {
                let sum = self.sum(|c| &cells(c)[i]);
                if sum != 0 {
                    push(format!("{p}.{group}.{name}"), sum);
                }
            }
        }
    }

    fn read_histograms(&self, _: &mut Vec<HistogramValue>) {}
}
