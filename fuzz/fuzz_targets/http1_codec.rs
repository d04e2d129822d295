//! Fuzz target: the HTTP/1 codec (src/protocol/http1) — request and response heads, bodies
//! (Content-Length, chunked with extensions and trailers, until close), and the encoders.
//!
//! Input: a control byte (requests or responses; responses to HEAD; small or default limits),
//! a seed for how the bytes arrive, then the bytes a peer sends. Checks, on any input:
//! - no panic;
//! - differential on arrival: the bytes fed in one piece and in random pieces (1..=16 bytes)
//!   give the same messages (head, framing, body, trailers), the same error, or else the same
//!   bytes left over (a tunnel's, or an unfinished message's);
//! - round trip: every message read, written again with the encoders and read back, gives the
//!   same head, framing, body and trailers (and for responses the same persistence).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardproxy::fuzzing::{
    headers::Headers,
    http1::{
        encode_chunk, encode_last_chunk, encode_request_head, encode_response_head, parse_request,
        parse_response, BodyDecoder, BodyEvent, Framing, Limits, ParsedRequest, ParsedResponse,
    },
};

/// At most this many messages are read per input.
const MAX_MESSAGES: usize = 16;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let Some((seed, bytes)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let side = if control & 1 == 0 {
        Side::Requests
    } else {
        Side::Responses {
            to_head: control & 2 != 0,
        }
    };
    let limits = if control & 4 == 0 {
        Limits::default()
    } else {
        Limits {
            max_head_bytes: 24 + usize::from(control >> 3) * 4,
            max_headers: usize::from(control >> 5) + 1,
        }
    };
    let whole = read(side, &limits, std::iter::once(bytes));
    let pieces = read(side, &limits, Pieces::new(bytes, u64::from_le_bytes(*seed)));
    assert_eq!(whole, pieces, "arrival changed the outcome");
    for message in &whole.messages {
        round_trip(side, &limits, message);
    }
});

#[derive(Debug, Clone, Copy)]
enum Side {
    Requests,
    Responses { to_head: bool },
}

#[derive(Debug, PartialEq)]
enum Head {
    Request(ParsedRequest),
    Response(ParsedResponse),
}

impl Head {
    fn framing(&self) -> Framing {
        match self {
            Head::Request(r) => r.framing,
            Head::Response(r) => r.framing,
        }
    }

    /// Whether the bytes after this head belong to another protocol (CONNECT, an upgrade, a
    /// 101), so the codec stops reading.
    fn tunnel(&self) -> bool {
        match self {
            Head::Request(r) => r.connect || r.upgrade.is_some(),
            Head::Response(r) => r.head.status == 101,
        }
    }
}

#[derive(Debug, PartialEq)]
struct Message {
    head: Head,
    body: Vec<u8>,
    trailers: Option<Headers>,
}

/// Everything one connection's bytes gave.
#[derive(Debug, PartialEq, Default)]
struct Outcome {
    messages: Vec<Message>,
    /// The error that ended reading (its Debug form), if any.
    error: Option<String>,
    /// Bytes never taken as part of a message (after an error, none: the connection closes,
    /// and how far the codec got into the bad bytes does not matter).
    left_over: Vec<u8>,
}

/// Reads messages from `pieces` as a connection would: parse from what has arrived, read more
/// only when the codec asks for it.
fn read<'a>(side: Side, limits: &Limits, pieces: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut pieces = pieces;
    let mut buf = BytesMut::new();
    let mut out = Outcome::default();
    let mut current: Option<(Head, BodyDecoder, Vec<u8>)> = None;
    while out.messages.len() < MAX_MESSAGES {
        let progress = match current.as_mut() {
            None => parse_head(side, &mut buf, limits).map(|head| match head {
                Some(head) => {
                    let decoder = BodyDecoder::new(&head.framing(), limits);
                    current = Some((head, decoder, Vec::new()));
                    true
                }
                None => false,
            }),
            Some((_, decoder, body)) => match decoder.decode(&mut buf) {
                Ok(BodyEvent::Data(data)) => {
                    body.extend_from_slice(&data);
                    Ok(true)
                }
                Ok(BodyEvent::NeedMore) => Ok(false),
                Ok(BodyEvent::Done { trailers }) => {
                    let (head, _, body) = current.take().expect("a message in progress");
                    let tunnel = head.tunnel();
                    out.messages.push(Message {
                        head,
                        body,
                        trailers,
                    });
                    if tunnel {
                        break;
                    }
                    Ok(true)
                }
                Err(e) => Err(format!("{e:?}")),
            },
        };
        match progress {
            Ok(true) => {}
            Ok(false) => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => {
                    // The peer closed: a read-until-close body ends here.
                    if let Some((head, mut decoder, body)) = current.take() {
                        match decoder.at_eof() {
                            Ok(()) => out.messages.push(Message {
                                head,
                                body,
                                trailers: None,
                            }),
                            Err(e) => out.error = Some(format!("{e:?}")),
                        }
                    }
                    break;
                }
            },
            Err(e) => {
                out.error = Some(e);
                break;
            }
        }
    }
    if out.error.is_none() {
        out.left_over = buf.to_vec();
        out.left_over.extend(pieces.flatten());
    }
    out
}

fn parse_head(side: Side, buf: &mut BytesMut, limits: &Limits) -> Result<Option<Head>, String> {
    match side {
        Side::Requests => parse_request(buf, limits)
            .map(|r| r.map(Head::Request))
            .map_err(|e| format!("{e:?}")),
        Side::Responses { to_head } => parse_response(buf, to_head, limits)
            .map(|r| r.map(Head::Response))
            .map_err(|e| format!("{e:?}")),
    }
}

/// Writes `message` with the encoders and reads it back.
fn round_trip(side: Side, limits: &Limits, message: &Message) {
    let mut out = Vec::new();
    let framing = message.head.framing();
    match (&message.head, side) {
        (Head::Request(r), _) => encode_request_head(&r.head, &framing, &mut out),
        (Head::Response(r), Side::Responses { to_head }) => {
            encode_response_head(&r.head, &framing, r.keep_alive, to_head, &mut out)
        }
        (Head::Response(_), Side::Requests) => unreachable!("responses come from response input"),
    }
    if message.head.tunnel() {
        return; // what follows is not HTTP/1; the head alone was checked to encode
    }
    match framing {
        Framing::Chunked => {
            encode_chunk(&message.body, &mut out);
            encode_last_chunk(message.trailers.as_ref(), &mut out);
        }
        _ => out.extend_from_slice(&message.body),
    }
    // The encoders write what the parsers accept, within any head limit the original met
    // (with room for `: ` separators and the framing and persistence fields they add).
    let roomy = Limits {
        max_head_bytes: limits.max_head_bytes * 3 + 64,
        max_headers: limits.max_headers + 2,
    };
    let again = read(side, &roomy, std::iter::once(&out[..]));
    assert_eq!(
        again.error,
        None,
        "re-encoded: {:?}",
        String::from_utf8_lossy(&out)
    );
    assert!(
        again.left_over.is_empty(),
        "re-encoded: {:?}",
        String::from_utf8_lossy(&out)
    );
    let [back] = &again.messages[..] else {
        panic!(
            "re-encoded {:?} read as {:?}",
            String::from_utf8_lossy(&out),
            again.messages
        );
    };
    assert_eq!(back.body, message.body);
    assert_eq!(back.trailers, message.trailers);
    match (&back.head, &message.head) {
        (Head::Request(back), Head::Request(first)) => {
            assert_eq!(back.head, first.head);
            assert_eq!(back.framing, first.framing);
        }
        (Head::Response(back), Head::Response(first)) => assert_eq!(back, first),
        _ => unreachable!("the same side"),
    }
}

/// The input cut at random points (1..=16 bytes a piece), from a seed.
struct Pieces<'a> {
    rest: &'a [u8],
    state: u64,
}

impl<'a> Pieces<'a> {
    fn new(bytes: &'a [u8], seed: u64) -> Self {
        Self {
            rest: bytes,
            state: seed | 1,
        }
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        // xorshift64
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let n = (1 + (self.state % 16) as usize).min(self.rest.len());
        let (piece, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(piece)
    }
}
