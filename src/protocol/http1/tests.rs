//! Protocol layer (tests): the codec end to end over byte streams — the malformed corpus,
//! pipelining without desync, every split point of the input, and encode/parse round trips.
use bytes::BytesMut;

use super::{corpus, *};
use crate::stream::headers::{Headers, RequestHead, ResponseHead, Version};

/// One request as the connection manager would see it, or the status it was refused with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Request {
        request: Box<ParsedRequest>,
        body: Vec<u8>,
        trailers: Option<Headers>,
    },
    Refused(u16),
}

/// Feeds `pieces` to the codec the way a connection would (parse, decode, read more), and
/// returns every request found, in order, ending at the first refusal, with the bytes not
/// consumed (those still buffered, then those never fed).
fn drive<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
    limits: &Limits,
) -> (Vec<Outcome>, Vec<u8>) {
    let mut pieces = pieces.into_iter();
    let (outcomes, mut rest) = drive_until_stop(&mut pieces, limits);
    rest.extend(pieces.flatten());
    (outcomes, rest)
}

fn drive_until_stop<'a>(
    pieces: &mut impl Iterator<Item = &'a [u8]>,
    limits: &Limits,
) -> (Vec<Outcome>, Vec<u8>) {
    let mut buf = BytesMut::new();
    let mut outcomes = Vec::new();
    let mut current: Option<(ParsedRequest, BodyDecoder, Vec<u8>)> = None;
    loop {
        let progressed = match current.as_mut() {
            None => match parse_request(&mut buf, limits) {
                Err(e) => {
                    outcomes.push(Outcome::Refused(e.status()));
                    return (outcomes, buf.to_vec());
                }
                Ok(Some(request)) => {
                    let decoder = BodyDecoder::new(&request.framing, limits);
                    current = Some((request, decoder, Vec::new()));
                    true
                }
                Ok(None) => false,
            },
            Some((_, decoder, body)) => match decoder.decode(&mut buf) {
                Err(e) => {
                    outcomes.push(Outcome::Refused(e.status()));
                    return (outcomes, buf.to_vec());
                }
                Ok(BodyEvent::Data(data)) => {
                    body.extend_from_slice(&data);
                    true
                }
                Ok(BodyEvent::Done { trailers }) => {
                    let (request, _, body) = current.take().expect("in a body");
                    outcomes.push(Outcome::Request {
                        request: Box::new(request),
                        body,
                        trailers,
                    });
                    true
                }
                Ok(BodyEvent::NeedMore) => false,
            },
        };
        if progressed {
            continue;
        }
        match pieces.next() {
            Some(piece) => buf.extend_from_slice(piece),
            None => {
                if let Some((_, decoder, _)) = current.as_mut() {
                    if let Err(e) = decoder.at_eof() {
                        outcomes.push(Outcome::Refused(e.status()));
                    }
                }
                return (outcomes, buf.to_vec());
            }
        }
    }
}

fn drive_whole(input: &[u8], limits: &Limits) -> (Vec<Outcome>, Vec<u8>) {
    drive([input], limits)
}

/// Same outcome when the input is cut at any one point, and when it arrives byte by byte.
fn assert_split_invariant(input: &[u8], limits: &Limits) {
    let whole = drive_whole(input, limits);
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        assert_eq!(
            drive([a, b], limits),
            whole,
            "split at {at} of {:?}",
            String::from_utf8_lossy(input)
        );
    }
    assert_eq!(
        drive(input.chunks(1), limits),
        whole,
        "byte by byte: {:?}",
        String::from_utf8_lossy(input)
    );
}

fn test_limits() -> Limits {
    Limits {
        max_head_bytes: 1024,
        max_headers: 16,
    }
}

#[test]
fn corpus_has_enough_cases() {
    assert!(corpus::MALFORMED.len() >= 50, "{}", corpus::MALFORMED.len());
    let mut names: Vec<_> = corpus::MALFORMED.iter().map(|c| c.0).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names.len(),
        corpus::MALFORMED.len(),
        "case names are unique"
    );
}

#[test]
fn malformed_corpus_is_refused_with_its_status() {
    for limits in [Limits::default(), test_limits()] {
        for (name, input, status) in corpus::MALFORMED {
            let (outcomes, _) = drive_whole(input, &limits);
            assert_eq!(
                outcomes.last(),
                Some(&Outcome::Refused(*status)),
                "{name}: {outcomes:?}"
            );
            assert_eq!(
                outcomes.len(),
                1,
                "{name}: nothing is accepted before the refusal"
            );
        }
    }
}

#[test]
fn malformed_corpus_outcome_does_not_depend_on_arrival() {
    for (_, input, _) in corpus::MALFORMED {
        assert_split_invariant(input, &test_limits());
    }
}

#[test]
fn accepted_corpus_is_taken_whole() {
    for (name, input) in corpus::ACCEPTED {
        let (outcomes, rest) = drive_whole(input, &test_limits());
        assert!(
            matches!(&outcomes[..], [Outcome::Request { .. }]),
            "{name}: {outcomes:?}"
        );
        assert!(rest.is_empty(), "{name}: left {rest:?}");
        assert_split_invariant(input, &test_limits());
    }
}

#[test]
fn oversized_requests_are_refused() {
    for limits in [Limits::default(), test_limits()] {
        for (name, input, status) in corpus::oversized(&limits) {
            let (outcomes, _) = drive_whole(&input, &limits);
            assert_eq!(outcomes, [Outcome::Refused(status)], "{name}");
            let (outcomes, _) = drive(input.chunks(100), &limits);
            assert_eq!(outcomes, [Outcome::Refused(status)], "{name} in pieces");
        }
    }
}

/// A pipelined stream exercising every body framing, including bodies that look like requests.
const PIPELINE: &[u8] = b"POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 27\r\n\r\n\
GET /inside-cl HTTP/1.1\r\n\r\n\
POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
1c;ext=1\r\nGET /inside-chunk HTTP/1.1\r\n\r\n\
0\r\nChecksum: abc\r\n\r\n\
\r\n\
GET /plain HTTP/1.1\r\nHost: a\r\n\r\n\
POST /empty-chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n\
GET /partial HTTP/1.1\r\n";

#[test]
fn pipelined_requests_do_not_desync() {
    let (outcomes, rest) = drive_whole(PIPELINE, &test_limits());
    let summary: Vec<_> = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Request {
                request,
                body,
                trailers,
            } => (
                String::from_utf8_lossy(&request.head.path).into_owned(),
                String::from_utf8_lossy(body).into_owned(),
                trailers.as_ref().map(Headers::len),
                request.keep_alive,
            ),
            Outcome::Refused(s) => panic!("refused {s}"),
        })
        .collect();
    let expected = [
        ("/cl", "GET /inside-cl HTTP/1.1\r\n\r\n", None, true),
        ("/chunked", "GET /inside-chunk HTTP/1.1\r\n", Some(1), true),
        ("/plain", "", None, true),
        ("/empty-chunked", "", None, true),
        ("/last", "", None, false),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(p, b, t, k)| (p.to_string(), b.to_string(), *t, *k))
        .collect();
    assert_eq!(summary, expected);
    assert_eq!(
        rest, b"GET /partial HTTP/1.1\r\n",
        "the next head waits, untouched"
    );
}

#[test]
fn pipelined_stream_outcome_does_not_depend_on_arrival() {
    assert_split_invariant(PIPELINE, &test_limits());
}

#[test]
fn the_byte_after_a_body_starts_the_next_request() {
    // A smuggling probe: with CL honoured, "G" is the first byte of the next request.
    let input = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    let (outcomes, rest) = drive_whole(input, &test_limits());
    assert_eq!(outcomes.len(), 2);
    let Outcome::Request { request, body, .. } = &outcomes[1] else {
        panic!("{outcomes:?}");
    };
    assert_eq!(request.head.path, "/next");
    assert!(body.is_empty());
    assert!(rest.is_empty());
}

#[test]
fn an_error_after_a_good_request_stops_there() {
    let input = b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (outcomes, _) = drive_whole(input, &test_limits());
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[1], Outcome::Refused(400));
}

fn headers(pairs: &[(&'static str, &'static str)]) -> Headers {
    let mut h = Headers::default();
    for (n, v) in pairs {
        h.append(*n, *v);
    }
    h
}

#[test]
fn request_round_trip() {
    let heads = [
        (
            RequestHead {
                method: "GET".into(),
                path: "/a/b?c=d".into(),
                version: Version::Http11,
                headers: headers(&[("host", "example.com"), ("x-a", "1"), ("x-a", "2")]),
            },
            Framing::Empty,
        ),
        (
            RequestHead {
                method: "POST".into(),
                path: "/upload".into(),
                version: Version::Http11,
                headers: headers(&[("host", "h:8080"), ("te", "trailers")]),
            },
            Framing::Chunked,
        ),
        (
            RequestHead {
                method: "PUT".into(),
                path: "/x".into(),
                version: Version::Http10,
                headers: headers(&[("host", "h")]),
            },
            Framing::Length(5),
        ),
        (
            RequestHead {
                method: "CONNECT".into(),
                path: "".into(),
                version: Version::Http11,
                headers: headers(&[("host", "tunnel.example:443")]),
            },
            Framing::Empty,
        ),
    ];
    for (head, framing) in heads {
        let mut out = Vec::new();
        encode_request_head(&head, &framing, &mut out);
        out.extend_from_slice(b"trailing");
        let mut buf = BytesMut::from(&out[..]);
        let parsed = parse_request(&mut buf, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(parsed.head, head);
        assert_eq!(parsed.framing, framing);
        assert_eq!(&buf[..], b"trailing");
    }
}

#[test]
fn response_round_trip() {
    let cases = [
        (200, Version::Http11, Framing::Length(12), true),
        (404, Version::Http11, Framing::Chunked, false),
        (200, Version::Http11, Framing::UntilClose, false),
        (204, Version::Http11, Framing::Empty, true),
        (503, Version::Http10, Framing::Length(3), true),
        (101, Version::Http11, Framing::Empty, true),
    ];
    for (status, version, framing, keep_alive) in cases {
        let head = ResponseHead {
            status,
            version,
            headers: headers(&[
                ("server", "shardproxy"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
            ]),
        };
        let mut out = Vec::new();
        encode_response_head(&head, &framing, keep_alive, false, &mut out);
        let mut buf = BytesMut::from(&out[..]);
        let parsed = parse_response(&mut buf, false, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(parsed.head, head, "{status}");
        assert_eq!(parsed.framing, framing, "{status}");
        assert_eq!(parsed.keep_alive, keep_alive && status != 101, "{status}");
        assert!(buf.is_empty());
    }
}

#[test]
fn chunked_body_round_trip_at_every_split() {
    let mut wire = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let parts: [&[u8]; 3] = [b"hello ", &[b'x'; 300], b"\r\n0\r\n"];
    for part in parts {
        encode_chunk(part, &mut wire);
    }
    let trailers = headers(&[("grpc-status", "0"), ("grpc-message", "ok")]);
    encode_last_chunk(Some(&trailers), &mut wire);
    let (outcomes, rest) = drive_whole(&wire, &Limits::default());
    let [Outcome::Request {
        body,
        trailers: got,
        ..
    }] = &outcomes[..]
    else {
        panic!("{outcomes:?}");
    };
    assert_eq!(body, &parts.concat());
    assert_eq!(got.as_ref(), Some(&trailers));
    assert!(rest.is_empty());
    assert_split_invariant(&wire, &Limits::default());
}

#[test]
fn response_parse_does_not_depend_on_arrival() {
    let input =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: y\r\n\r\nabc";
    // Heads until the final (non-1xx) one, and the bytes after it.
    let parse_all = |pieces: &[&[u8]]| {
        let mut buf = BytesMut::new();
        let mut heads: Vec<ParsedResponse> = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            while heads.last().is_none_or(|r| r.head.status < 200) {
                match parse_response(&mut buf, false, &Limits::default()).unwrap() {
                    Some(r) => heads.push(r),
                    None => break,
                }
            }
        }
        (heads, buf.to_vec())
    };
    let whole = parse_all(&[input]);
    assert_eq!(whole.0.len(), 2);
    assert_eq!(whole.1, b"abc");
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        assert_eq!(parse_all(&[a, b]), whole, "split at {at}");
    }
}
