//! Bench tool: a TLS 1.3 handshake load generator (rustls, aws-lc-rs; X25519 and
//! TLS_AES_128_GCM_SHA256 only).
//!
//! `--connections` in flight (non-blocking, one thread, an epoll loop), each slot
//! reopened as soon as its connection ends, until `--duration` is over: connect, full handshake
//! (or, with `--resume`, a resumption with a ticket the server sent on an earlier connection),
//! then close_notify and read to EOF (so the server has processed the client's Finished, sent
//! its tickets and closed: every counted handshake completed on the server too). Prints one
//! line `BENCHJSON {json}`.
//!
//! Made to cost the client less than the server: the server's certificate and its
//! CertificateVerify signature are not checked (no ECDSA verification, no chain building);
//! the client's work per handshake is one X25519 key pair and agreement plus the key schedule.
//! OpenSSL 3.0 clients (`openssl s_time`, wrk, h2load) spend more per handshake than the
//! servers they measure.
use std::{
    collections::VecDeque,
    io::{self, Read},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mio::{net::TcpStream, Events, Interest, Poll, Token};

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls13ClientSessionValue,
    },
    crypto::{aws_lc_rs, CryptoProvider},
    pki_types::{CertificateDer, ServerName, UnixTime},
    ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind, SignatureScheme,
};

/// Accepts any certificate and signature: the load generator measures the server, not itself.
#[derive(Debug)]
struct NoVerify;

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ED25519,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PSS_SHA512,
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::RSA_PKCS1_SHA384,
            SignatureScheme::RSA_PKCS1_SHA512,
        ]
    }
}

/// Tickets for the one server, oldest first, as many as the connections in flight need.
/// (rustls' `ClientSessionMemoryCache` keeps 8 per server: with more connections in flight than
/// that, a server that sends one ticket per connection runs the client out of tickets, and it
/// falls back to full handshakes.)
#[derive(Debug, Default)]
struct Tickets {
    tls13: Mutex<VecDeque<Tls13ClientSessionValue>>,
    tls12: Mutex<Option<Tls12ClientSessionValue>>,
    kx_hint: Mutex<Option<rustls::NamedGroup>>,
}

/// Most tickets kept.
const MAX_TICKETS: usize = 4096;

impl ClientSessionStore for Tickets {
    fn set_kx_hint(&self, _: ServerName<'static>, group: rustls::NamedGroup) {
        *self.kx_hint.lock().unwrap() = Some(group);
    }
    fn kx_hint(&self, _: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        *self.kx_hint.lock().unwrap()
    }
    fn set_tls12_session(&self, _: ServerName<'static>, value: Tls12ClientSessionValue) {
        *self.tls12.lock().unwrap() = Some(value);
    }
    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.tls12.lock().unwrap().clone()
    }
    fn remove_tls12_session(&self, _: &ServerName<'static>) {
        *self.tls12.lock().unwrap() = None;
    }
    fn insert_tls13_ticket(&self, _: ServerName<'static>, value: Tls13ClientSessionValue) {
        let mut q = self.tls13.lock().unwrap();
        if q.len() == MAX_TICKETS {
            q.pop_front();
        }
        q.push_back(value);
    }
    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        // The newest: the server issued it last, so it is the least likely to have expired.
        self.tls13.lock().unwrap().pop_back()
    }
}

struct Args {
    addr: SocketAddr,
    sni: ServerName<'static>,
    duration: Duration,
    threads: usize,
    resume: bool,
    tls12: bool,
    timeout: Duration,
}

fn usage() -> ! {
    eprintln!(
        "usage: tlsclient --port P [--host 127.0.0.1] [--sni bench.example.com] [--duration 10] \
         [--connections 8] [--resume] [--tls12] [--timeout 5]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let (mut host, mut sni) = ("127.0.0.1".to_string(), "bench.example.com".to_string());
    let mut port: Option<u16> = None;
    let (mut duration, mut threads, mut resume, mut timeout) = (10.0f64, 8usize, false, 5.0f64);
    let mut tls12 = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--host" => host = val(),
            "--port" => port = val().parse().ok(),
            "--sni" => sni = val(),
            "--duration" => duration = val().parse().unwrap_or_else(|_| usage()),
            "--connections" | "--threads" => threads = val().parse().unwrap_or_else(|_| usage()),
            "--timeout" => timeout = val().parse().unwrap_or_else(|_| usage()),
            "--resume" => resume = true,
            "--tls12" => tls12 = true,
            _ => usage(),
        }
    }
    let Some(port) = port else { usage() };
    Args {
        addr: format!("{host}:{port}").parse().unwrap_or_else(|_| usage()),
        sni: ServerName::try_from(sni).unwrap_or_else(|_| usage()),
        duration: Duration::from_secs_f64(duration),
        threads: threads.max(1),
        resume,
        tls12,
        timeout: Duration::from_secs_f64(timeout),
    }
}

#[derive(Default)]
struct Tally {
    handshakes: u64,
    resumed: u64,
    errors: u64,
    error_samples: Vec<String>,
    latency_us: Vec<u32>,
    negotiated: Option<String>,
}

impl Tally {
    fn error(&mut self, e: &io::Error) {
        self.errors += 1;
        let s = format!("{:?}: {e}", e.kind());
        if self.error_samples.len() < 3 && !self.error_samples.contains(&s) {
            self.error_samples.push(s);
        }
    }
}

fn io_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Where a connection is.
enum Phase {
    /// TCP connect in progress.
    Connecting,
    /// ClientHello sent, reading the server's flight.
    Handshaking,
    /// Finished and close_notify sent; reading the server's tickets and its close to EOF.
    Closing,
}

/// One connection in flight.
struct Conn {
    sock: TcpStream,
    tls: ClientConnection,
    phase: Phase,
    started: Instant,
    kind: HandshakeKind,
}

/// Writes what rustls has queued (the socket takes these few hundred bytes at once).
fn flush(c: &mut Conn) -> io::Result<()> {
    while c.tls.wants_write() {
        match c.tls.write_tls(&mut c.sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Drives a connection on a readiness event. `Ok(true)`: done (the server closed after the
/// handshake).
fn advance(c: &mut Conn, t: &mut Tally) -> io::Result<bool> {
    if let Phase::Connecting = c.phase {
        if let Some(e) = c.sock.take_error()? {
            return Err(e);
        }
        match c.sock.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false), // not yet
            Err(e) => return Err(e),
        }
        c.sock.set_nodelay(true)?;
        c.phase = Phase::Handshaking;
        flush(c)?; // ClientHello
        return Ok(false);
    }
    // Edge-triggered: read until the socket would block.
    loop {
        match c.tls.read_tls(&mut c.sock) {
            Ok(0) => {
                return match c.phase {
                    Phase::Closing => Ok(true),
                    _ => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF during the handshake")),
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return match c.phase {
                    Phase::Closing => Ok(true),
                    _ => Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        match c.phase {
            Phase::Handshaking => {
                c.tls.process_new_packets().map_err(io_err)?;
                if !c.tls.is_handshaking() {
                    c.kind = c.tls.handshake_kind().unwrap_or(HandshakeKind::Full);
                    if t.negotiated.is_none() {
                        t.negotiated = Some(format!(
                            "{:?} {:?} {:?}",
                            c.tls.protocol_version(),
                            c.tls.negotiated_cipher_suite().map(|s| s.suite()),
                            c.tls.negotiated_key_exchange_group().map(|g| g.name())
                        ));
                    }
                    // The client's Finished (still queued) goes out with the close_notify.
                    c.tls.send_close_notify();
                    c.phase = Phase::Closing;
                }
                flush(c)?;
            }
            Phase::Closing => {
                // Tickets go to the session store; the server's close_notify ends the stream.
                if c.tls.process_new_packets().is_err() {
                    return Ok(true);
                }
                let mut sink = [0u8; 4096];
                while matches!(c.tls.reader().read(&mut sink), Ok(n) if n > 0) {}
            }
            Phase::Connecting => unreachable!(),
        }
    }
}

fn open(config: &Arc<ClientConfig>, a: &Args, poll: &Poll, token: Token) -> io::Result<Conn> {
    let mut sock = TcpStream::connect(a.addr)?;
    poll.registry()
        .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)?;
    let tls = ClientConnection::new(config.clone(), a.sni.clone()).map_err(io_err)?;
    Ok(Conn {
        sock,
        tls,
        phase: Phase::Connecting,
        started: Instant::now(),
        kind: HandshakeKind::Full,
    })
}

/// `--connections` in flight on one thread (an epoll loop: no thread switches), each
/// slot reopened as soon as its connection ends, until the deadline.
fn run(config: Arc<ClientConfig>, a: &Args, deadline: Instant) -> io::Result<Tally> {
    let mut t = Tally::default();
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut slots: Vec<Option<Conn>> = Vec::with_capacity(a.threads);
    for i in 0..a.threads {
        let c = match open(&config, a, &poll, Token(i)) {
            Ok(c) => Some(c),
            Err(e) => {
                t.error(&e);
                None
            }
        };
        slots.push(c);
    }
    while Instant::now() < deadline {
        // Slots without a connection (after an error) retry, not too fast.
        for i in 0..slots.len() {
            if slots[i].is_none() {
                match open(&config, a, &poll, Token(i)) {
                    Ok(c) => slots[i] = Some(c),
                    Err(e) => t.error(&e),
                }
            }
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        let now = Instant::now();
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(c) = slots[i].as_mut() else { continue };
            let result = advance(c, &mut t);
            let stale = now.duration_since(c.started) > a.timeout;
            match result {
                Ok(false) if !stale => continue,
                Ok(false) => t.error(&io::Error::new(io::ErrorKind::TimedOut, "connection timed out")),
                Ok(true) => {
                    t.handshakes += 1;
                    if c.kind == HandshakeKind::Resumed {
                        t.resumed += 1;
                    }
                    t.latency_us
                        .push(c.started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
                Err(e) => t.error(&e),
            }
            let mut old = slots[i].take().expect("slot");
            let _ = poll.registry().deregister(&mut old.sock);
            drop(old);
            if Instant::now() < deadline {
                match open(&config, a, &poll, Token(i)) {
                    Ok(c) => slots[i] = Some(c),
                    Err(e) => {
                        t.error(&e);
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
        // Connections that never got an event (a silent server) time out too.
        for slot in slots.iter_mut() {
            if slot.as_ref().is_some_and(|c| now.duration_since(c.started) > a.timeout) {
                t.error(&io::Error::new(io::ErrorKind::TimedOut, "connection timed out"));
                if let Some(mut c) = slot.take() {
                    let _ = poll.registry().deregister(&mut c.sock);
                }
            }
        }
    }
    Ok(t)
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn main() {
    let a = Arc::new(parse_args());
    let mut provider: CryptoProvider = aws_lc_rs::default_provider();
    // The same for every server, and as the harness's OpenSSL clients are configured
    // (bench/scenarios.py): X25519, TLS_AES_128_GCM_SHA256.
    provider.kx_groups = vec![aws_lc_rs::kx_group::X25519];
    provider.cipher_suites = vec![aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256];
    // --tls12 (a comparison, not a scenario): TLS 1.2, whose ticket resumption skips the key
    // exchange that TLS 1.3's PSK-DHE resumption keeps.
    let version: &'static rustls::SupportedProtocolVersion = if a.tls12 {
        provider.cipher_suites = vec![
            aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            aws_lc_rs::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ];
        &rustls::version::TLS12
    } else {
        &rustls::version::TLS13
    };
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .expect("protocol version")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify))
        .with_no_client_auth();
    config.resumption = if a.resume {
        Resumption::store(Arc::new(Tickets::default()))
    } else {
        // Still offers psk_dhe_ke (servers send tickets, as to any browser); never resumes.
        Resumption::disabled()
    };
    let config = Arc::new(config);
    let start = Instant::now();
    let deadline = start + a.duration;
    let mut all = run(config, &a, deadline).unwrap_or_else(|e| {
        eprintln!("tlsclient: {e}");
        std::process::exit(1)
    });
    let elapsed = start.elapsed().as_secs_f64().min(a.duration.as_secs_f64().max(1e-9) + 0.5);
    all.latency_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        if all.latency_us.is_empty() {
            return 0;
        }
        let i = ((all.latency_us.len() as f64 * p).ceil() as usize).clamp(1, all.latency_us.len());
        all.latency_us[i - 1]
    };
    let samples: Vec<String> = all.error_samples.iter().map(|s| json_str(s)).collect();
    println!(
        "BENCHJSON {{\"handshakes\":{},\"resumed\":{},\"errors\":{},\"error_samples\":[{}],\
         \"duration_s\":{:.6},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"max_us\":{},\
         \"negotiated\":{}}}",
        all.handshakes,
        all.resumed,
        all.errors,
        samples.join(","),
        elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        all.latency_us.last().copied().unwrap_or(0),
        json_str(all.negotiated.as_deref().unwrap_or("none")),
    );
}
