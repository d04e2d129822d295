//! NET/IO layer: running a listener's listener filters on a new connection. The TLS and HTTP
//! inspectors look at bytes peeked (MSG_PEEK) into the shard's scratch buffer, so nothing is
//! consumed: the chain's transport socket reads the same bytes again. They stop at the first
//! answer, the listener filter timeout, or the peer's close.
use std::{future::poll_fn, net::SocketAddr, task::Poll};

use futures_lite::future;
use model::{
    listener_filters::{ListenerFilterKind, ListenerFilters},
    stats::inc,
};

use super::{
    inspect::{
        client_hello::{self, Detect},
        http::{detect_http, HttpDetect, MAX_INSPECT_SIZE},
    },
    socket::Socket,
};
use crate::{context::ShardContext, rt::timer};

/// What the listener filters found, for filter-chain matching.
#[derive(Debug, Default)]
pub struct Found {
    /// The SNI, lowercase (empty without one).
    pub server_name: String,
    /// `tls` when a ClientHello was seen, else `raw_buffer`.
    pub tls: bool,
    /// ALPN protocols offered (TLS) or the one detected (`http/1.1`, `h2c`, ...).
    pub application_protocols: Vec<String>,
    /// The destination before an iptables REDIRECT (the `original_dst` filter), or the one an
    /// internal connection stands for (`istio.set_internal_dst_address`): the connection's
    /// local address from now on.
    pub original_destination: Option<SocketAddr>,
    /// Where `ORIGINAL_DST` clusters send an internal connection (its tunnel address).
    pub tunnel_destination: Option<SocketAddr>,
}

impl Found {
    pub fn transport_protocol(&self) -> &'static str {
        if self.tls {
            client_hello::TRANSPORT_PROTOCOL
        } else {
            "raw_buffer"
        }
    }
}

/// Why the connection is closed before a chain is picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// The peer closed (or the socket failed) during inspection.
    Closed,
    /// The listener filter timeout passed (without `continue_on_listener_filters_timeout`).
    TimedOut,
    /// An inspector refused it: a ClientHello larger than `max_client_hello_size`, or no end
    /// of an HTTP request line within 64 KiB.
    Rejected,
}

/// Where each inspector stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Done,
}

/// Runs the filters of `filters` that apply to a connection to `local` (to the destination
/// `original_dst` restores, for the filters after it).
pub async fn run(
    ctx: &ShardContext,
    filters: &ListenerFilters,
    local: SocketAddr,
    stream: &mut Socket,
) -> Result<Found, Abort> {
    let mut found = Found::default();
    let mut active: Vec<&ListenerFilterKind> = Vec::new();
    let mut local = local;
    for filter in &filters.filters {
        if filter.disabled.as_ref().is_some_and(|p| p.matches(local)) {
            continue;
        }
        match &filter.kind {
            // Not an inspector: a socket option, read at once (not redirected: none). The
            // filters after it see the restored destination, as in Envoy: Istio disables its
            // inspectors for connections to 15006 itself, not for those redirected there.
            ListenerFilterKind::OriginalDst => {
                found.original_destination = stream.original_dst().ok();
                local = found.original_destination.unwrap_or(local);
            }
            ListenerFilterKind::SetInternalDstAddress => {
                if let Some(passage) = stream.passage() {
                    let (destination, tunnel) = passage.internal_destination();
                    found.original_destination = destination.or(found.original_destination);
                    found.tunnel_destination = tunnel.or(found.tunnel_destination);
                    local = found.original_destination.unwrap_or(local);
                }
            }
            inspector => active.push(inspector),
        }
    }
    if active.is_empty() {
        return Ok(found);
    }
    let inspect = inspect(ctx, &active, stream, &mut found);
    let outcome = match filters.timeout {
        None => inspect.await,
        Some(timeout) => {
            future::or(inspect, async {
                timer::sleep(timeout).await;
                Err(Abort::TimedOut)
            })
            .await
        }
    };
    match outcome {
        Err(Abort::TimedOut) if filters.continue_on_timeout => Ok(found),
        Err(abort) => Err(abort),
        Ok(()) => Ok(found),
    }
}

async fn inspect(
    ctx: &ShardContext,
    active: &[&ListenerFilterKind],
    stream: &mut Socket,
    found: &mut Found,
) -> Result<(), Abort> {
    // The most bytes any inspector looks at: a whole ClientHello (with its record headers),
    // or a request line.
    let wanted = active
        .iter()
        .map(|f| match f {
            ListenerFilterKind::TlsInspector {
                max_client_hello, ..
            } => (*max_client_hello).min(client_hello::MAX_CLIENT_HELLO_SIZE),
            ListenerFilterKind::HttpInspector { .. }
            | ListenerFilterKind::OriginalDst
            | ListenerFilterKind::SetInternalDstAddress => MAX_INSPECT_SIZE,
        })
        .max()
        .unwrap_or(MAX_INSPECT_SIZE);
    let mut states = vec![State::Waiting; active.len()];
    let mut seen = 0;
    loop {
        let step = poll_fn(|cx| {
            let mut scratch = ctx.scratch.borrow_mut();
            let len = wanted.min(scratch.len());
            let n = match stream.poll_peek(cx, &mut scratch[..len], seen) {
                // The peer closed before the filters had their answer: so does Envoy.
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(Abort::Closed)),
                Poll::Ready(Ok(n)) => n,
                Poll::Pending => return Poll::Pending,
            };
            let bytes = &mut scratch[..n];
            // In order, as Envoy runs them: a filter starts when the one before it is done.
            for (filter, state) in active.iter().zip(states.iter_mut()) {
                if *state == State::Waiting {
                    *state = examine(filter, ctx.id, &mut *bytes, n == len, found)?;
                    if *state == State::Waiting {
                        break;
                    }
                }
            }
            Poll::Ready(Ok(n))
        })
        .await?;
        if states.iter().all(|s| *s == State::Done) {
            return Ok(());
        }
        seen = step;
    }
}

/// One inspector's look at the bytes so far; `last` = no more bytes will be looked at (the
/// peek is as large as it gets).
fn examine(
    filter: &ListenerFilterKind,
    shard: usize,
    bytes: &mut [u8],
    last: bool,
    found: &mut Found,
) -> Result<State, Abort> {
    match filter {
        ListenerFilterKind::TlsInspector {
            max_client_hello,
            stats,
        } => {
            let cells = stats.shard(shard);
            match client_hello::detect(bytes, *max_client_hello) {
                Detect::NeedMore if !last => Ok(State::Waiting),
                Detect::NeedMore
                | Detect::NotTls
                | Detect::Invalid(client_hello::Invalid::Malformed(_)) => {
                    inc(&cells.tls_not_found);
                    Ok(State::Done)
                }
                Detect::Invalid(client_hello::Invalid::TooLarge) => {
                    inc(&cells.client_hello_too_large);
                    Err(Abort::Rejected)
                }
                Detect::Hello(hello) => {
                    inc(&cells.tls_found);
                    found.tls = true;
                    match hello.server_name() {
                        Some(name) => {
                            inc(&cells.sni_found);
                            found.server_name = name.to_ascii_lowercase();
                        }
                        None => inc(&cells.sni_not_found),
                    }
                    found.application_protocols = hello
                        .alpn()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect();
                    inc(if found.application_protocols.is_empty() {
                        &cells.alpn_not_found
                    } else {
                        &cells.alpn_found
                    });
                    Ok(State::Done)
                }
            }
        }
        // Envoy's HTTP inspector leaves TLS connections alone.
        ListenerFilterKind::HttpInspector { .. } if found.tls => Ok(State::Done),
        ListenerFilterKind::HttpInspector { stats } => {
            let cells = stats.shard(shard);
            let detected = detect_http(bytes);
            let cell = match detected {
                HttpDetect::NeedMore if !last => return Ok(State::Waiting),
                HttpDetect::NeedMore | HttpDetect::NotHttp => &cells.http_not_found,
                HttpDetect::TooLong => {
                    inc(&cells.read_error);
                    return Err(Abort::Rejected);
                }
                HttpDetect::Http10 => &cells.http10_found,
                HttpDetect::Http11 => &cells.http11_found,
                HttpDetect::H2c => &cells.http2_found,
            };
            inc(cell);
            let protocol = detected.application_protocol();
            found
                .application_protocols
                .extend(protocol.map(String::from));
            Ok(State::Done)
        }
        // Read before inspection (`run`), never here.
        ListenerFilterKind::OriginalDst | ListenerFilterKind::SetInternalDstAddress => {
            Ok(State::Done)
        }
    }
}
