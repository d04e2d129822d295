//! Bench tool: a TLS 1.3 handshake load generator (rustls, aws-lc-rs; X25519 and
//! TLS_AES_128_GCM_SHA256 only).
//!
//! `--threads` blocking connections, each in a loop until `--duration` is over: connect, full
//! handshake (or, with `--resume`, a resumption with the ticket the server sent on the previous
//! connection), then close_notify and read to EOF (so the server has processed the client's
//! Finished, sent its tickets and closed: every counted handshake completed on the server too).
//! Prints one line `BENCHJSON {json}`.
//!
//! Made to cost the client less than the server: the server's certificate and its
//! CertificateVerify signature are not checked (no ECDSA verification, no chain building);
//! the client's work per handshake is one X25519 key pair and agreement plus the key schedule.
//! OpenSSL 3.0 clients (`openssl s_time`, wrk, h2load) spend more per handshake than the
//! servers they measure.
use std::{
    io::{self, Read},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        Resumption,
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

struct Args {
    addr: SocketAddr,
    sni: ServerName<'static>,
    duration: Duration,
    threads: usize,
    resume: bool,
    timeout: Duration,
}

fn usage() -> ! {
    eprintln!(
        "usage: tlsclient --port P [--host 127.0.0.1] [--sni bench.example.com] [--duration 10] \
         [--threads 8] [--resume] [--timeout 5]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let (mut host, mut sni) = ("127.0.0.1".to_string(), "bench.example.com".to_string());
    let mut port: Option<u16> = None;
    let (mut duration, mut threads, mut resume, mut timeout) = (10.0f64, 8usize, false, 5.0f64);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--host" => host = val(),
            "--port" => port = val().parse().ok(),
            "--sni" => sni = val(),
            "--duration" => duration = val().parse().unwrap_or_else(|_| usage()),
            "--threads" => threads = val().parse().unwrap_or_else(|_| usage()),
            "--timeout" => timeout = val().parse().unwrap_or_else(|_| usage()),
            "--resume" => resume = true,
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

fn io_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// One connection: handshake, close_notify, read to EOF. Returns the handshake kind and what
/// was negotiated.
fn one(config: &Arc<ClientConfig>, a: &Args) -> io::Result<(HandshakeKind, String)> {
    let mut sock = TcpStream::connect_timeout(&a.addr, a.timeout)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(a.timeout))?;
    let mut conn = ClientConnection::new(config.clone(), a.sni.clone()).map_err(io_err)?;
    while conn.is_handshaking() {
        while conn.wants_write() {
            conn.write_tls(&mut sock)?;
        }
        if !conn.is_handshaking() {
            break;
        }
        if conn.read_tls(&mut sock)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF during the handshake"));
        }
        conn.process_new_packets().map_err(io_err)?;
    }
    // The client's Finished (still queued) goes out with the close_notify, in one write.
    let kind = conn.handshake_kind().unwrap_or(HandshakeKind::Full);
    let negotiated = format!(
        "{:?} {:?} {:?}",
        conn.protocol_version(),
        conn.negotiated_cipher_suite().map(|s| s.suite()),
        conn.negotiated_key_exchange_group().map(|g| g.name())
    );
    conn.send_close_notify();
    while conn.wants_write() {
        conn.write_tls(&mut sock)?;
    }
    // The server's tickets and close: process them (tickets go to the session store) until EOF.
    loop {
        match conn.read_tls(&mut sock) {
            Ok(0) => break,
            Ok(_) => {
                if conn.process_new_packets().is_err() {
                    break;
                }
                // Plaintext is not expected; drain whatever came.
                let mut sink = [0u8; 4096];
                while matches!(conn.reader().read(&mut sink), Ok(n) if n > 0) {}
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        }
    }
    let _ = sock.shutdown(Shutdown::Both);
    Ok((kind, negotiated))
}

fn worker(config: Arc<ClientConfig>, a: Arc<Args>, deadline: Instant) -> Tally {
    let mut t = Tally::default();
    while Instant::now() < deadline {
        let t0 = Instant::now();
        match one(&config, &a) {
            Ok((kind, negotiated)) => {
                t.handshakes += 1;
                if kind == HandshakeKind::Resumed {
                    t.resumed += 1;
                }
                t.latency_us.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                if t.negotiated.is_none() {
                    t.negotiated = Some(negotiated);
                }
            }
            Err(e) => {
                t.errors += 1;
                let s = format!("{:?}: {e}", e.kind());
                if t.error_samples.len() < 3 && !t.error_samples.contains(&s) {
                    t.error_samples.push(s);
                }
                // A refused or reset connection: do not spin.
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
    t
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
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify))
        .with_no_client_auth();
    config.resumption = if a.resume {
        Resumption::in_memory_sessions(1024)
    } else {
        // Still offers psk_dhe_ke (servers send tickets, as to any browser); never resumes.
        Resumption::disabled()
    };
    let config = Arc::new(config);
    let start = Instant::now();
    let deadline = start + a.duration;
    let handles: Vec<_> = (0..a.threads)
        .map(|_| {
            let (c, a) = (config.clone(), a.clone());
            thread::spawn(move || worker(c, a, deadline))
        })
        .collect();
    let mut all = Tally::default();
    for h in handles {
        let t = h.join().expect("worker");
        all.handshakes += t.handshakes;
        all.resumed += t.resumed;
        all.errors += t.errors;
        for s in t.error_samples {
            if all.error_samples.len() < 3 && !all.error_samples.contains(&s) {
                all.error_samples.push(s);
            }
        }
        all.latency_us.extend(t.latency_us);
        all.negotiated = all.negotiated.or(t.negotiated);
    }
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
