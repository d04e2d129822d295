//! Protocol layer: HTTP/1 message bodies — Content-Length, chunked (RFC 9112 §7.1, with
//! trailers) and read-until-close — taken off the connection buffer zero-copy, never past the
//! message's last byte.
use bytes::{Buf, Bytes, BytesMut};

use super::{
    fields::{trailer_fields, Spans},
    syntax::has_bare_lf,
    BodyError, Framing, Limits,
};
use crate::stream::headers::Headers;

/// Longest chunk-size line accepted, extensions included, CRLF excluded.
const MAX_CHUNK_LINE: usize = 4096;

/// Chunk-extension bytes allowed over one whole body: extensions carry nothing the proxy uses,
/// so a body made mostly of them is refused rather than parsed forever.
const CHUNK_EXTENSION_BUDGET: usize = 16 * 1024;

/// What one `decode` call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEvent {
    /// Body bytes, a zero-copy slice of the buffer.
    Data(Bytes),
    /// The buffer holds nothing more of this body; read more and call again.
    NeedMore,
    /// The body is over; the buffer starts at the next message. Trailers of a chunked body
    /// (hop-by-hop and framing fields removed; `None` when there were none).
    Done { trailers: Option<Headers> },
}

/// Where in the body the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Content-Length bytes still to come.
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Chunk data bytes still to come.
    ChunkData(u64),
    /// Expecting the CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: the trailer section, then CRLF.
    Trailers,
    UntilClose,
    Done,
}

/// Takes one message body off a connection buffer, as the head's `Framing` says.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
    extension_budget: usize,
    limits: Limits,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`; `limits` bound the trailer section as they
    /// bound a head.
    pub fn new(framing: &Framing, limits: &Limits) -> Self {
        let state = match *framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        Self {
            state,
            extension_budget: CHUNK_EXTENSION_BUDGET,
            limits: *limits,
        }
    }

    /// Takes what it can of the body off the front of `buf`. Call until `NeedMore` (read more)
    /// or `Done` (which repeats, without trailers, if called again). An error means the
    /// message's end is lost: close the connection.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<BodyEvent, BodyError> {
        loop {
            match self.state {
                State::Done => return Ok(BodyEvent::Done { trailers: None }),
                State::Length(remaining) => {
                    let Some(data) = take(buf, remaining) else {
                        return Ok(BodyEvent::NeedMore);
                    };
                    let left = remaining - data.len() as u64;
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length(left)
                    };
                    return Ok(BodyEvent::Data(data));
                }
                State::ChunkData(remaining) => {
                    let Some(data) = take(buf, remaining) else {
                        return Ok(BodyEvent::NeedMore);
                    };
                    let left = remaining - data.len() as u64;
                    self.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left)
                    };
                    return Ok(BodyEvent::Data(data));
                }
                State::UntilClose if buf.is_empty() => return Ok(BodyEvent::NeedMore),
                State::UntilClose => return Ok(BodyEvent::Data(buf.split().freeze())),
                State::ChunkSize => match self.chunk_size(buf)? {
                    None => return Ok(BodyEvent::NeedMore),
                    Some(0) => self.state = State::Trailers,
                    Some(n) => self.state = State::ChunkData(n),
                },
                State::ChunkEnd => match expect_crlf(buf)? {
                    false => return Ok(BodyEvent::NeedMore),
                    true => self.state = State::ChunkSize,
                },
                State::Trailers => return self.trailers(buf),
            }
        }
    }

    /// The peer closed the connection: fine for a read-until-close body (which is then done)
    /// or a finished one; an error when a length or chunk is incomplete. Call after `decode`
    /// returned `NeedMore`.
    pub fn at_eof(&mut self) -> Result<(), BodyError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(BodyError::Incomplete),
        }
    }

    /// Whether the whole body has been taken (the last `Data` included).
    #[cfg(test)]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes a chunk-size line `1*HEXDIG [chunk-ext] CRLF`; `None` until it is complete.
    fn chunk_size(&mut self, buf: &mut BytesMut) -> Result<Option<u64>, BodyError> {
        let scan = &buf[..buf.len().min(MAX_CHUNK_LINE + 2)];
        let Some(lf) = scan.iter().position(|b| *b == b'\n') else {
            if scan.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
                return Err(BodyError::InvalidChunkSize);
            }
            if buf.len() > MAX_CHUNK_LINE + 1 {
                return Err(BodyError::ChunkLineTooLong);
            }
            return Ok(None);
        };
        // A line that does not start with a digit is refused as such whether or not its end
        // has arrived (above): the same bytes give the same error however they are cut.
        let digits = scan[..lf]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if digits == 0 {
            return Err(BodyError::InvalidChunkSize);
        }
        let Some(line) = scan[..lf].strip_suffix(b"\r") else {
            return Err(BodyError::MissingCrlf);
        };
        if line.len() > MAX_CHUNK_LINE {
            return Err(BodyError::ChunkLineTooLong);
        }
        let size = line[..digits].iter().try_fold(0u64, |n, &b| {
            let digit = (b as char).to_digit(16).unwrap_or_default();
            n.checked_mul(16)
                .and_then(|n| n.checked_add(u64::from(digit)))
                .ok_or(BodyError::ChunkSizeOverflow)
        })?;
        let extensions = &line[digits..];
        if !extensions.is_empty() {
            if !valid_extensions(extensions) {
                return Err(BodyError::InvalidChunkExtension);
            }
            self.extension_budget = self
                .extension_budget
                .checked_sub(extensions.len())
                .ok_or(BodyError::ChunkExtensionsTooLarge)?;
        }
        buf.advance(lf + 1);
        Ok(Some(size))
    }

    /// After the last chunk: an empty line, or trailer fields then an empty line, all with
    /// CRLF line ends.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<BodyEvent, BodyError> {
        if buf.first() == Some(&b'\r') {
            return Ok(match expect_crlf(buf)? {
                false => BodyEvent::NeedMore,
                true => self.finish(None),
            });
        }
        if buf.is_empty() {
            return Ok(BodyEvent::NeedMore);
        }
        let window = buf.len().min(self.limits.max_head_bytes);
        let (spans, len) = {
            let base = &buf[..window];
            let mut slots = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
            match httparse::parse_headers(base, &mut slots) {
                Ok(httparse::Status::Complete((len, fields))) => {
                    if has_bare_lf(&base[..len]) {
                        return Err(BodyError::MissingCrlf);
                    }
                    (Spans::record(base, fields), len)
                }
                Ok(httparse::Status::Partial) if buf.len() < self.limits.max_head_bytes => {
                    return Ok(BodyEvent::NeedMore)
                }
                Ok(httparse::Status::Partial) => return Err(BodyError::TrailersTooLarge),
                Err(httparse::Error::TooManyHeaders) => return Err(BodyError::TooManyTrailers),
                Err(_) => return Err(BodyError::InvalidTrailers),
            }
        };
        spans.lower_case_names(buf);
        let block = buf.split_to(len).freeze();
        let trailers = trailer_fields(&block, &spans);
        Ok(self.finish((!trailers.is_empty()).then_some(trailers)))
    }

    fn finish(&mut self, trailers: Option<Headers>) -> BodyEvent {
        self.state = State::Done;
        BodyEvent::Done { trailers }
    }
}

/// Up to `remaining` bytes off the front of `buf`; `None` when it is empty.
fn take(buf: &mut BytesMut, remaining: u64) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
    Some(buf.split_to(n).freeze())
}

/// Consumes a CRLF: `false` while incomplete, an error for anything else.
fn expect_crlf(buf: &mut BytesMut) -> Result<bool, BodyError> {
    match (buf.first(), buf.get(1)) {
        (None, _) | (Some(b'\r'), None) => Ok(false),
        (Some(b'\r'), Some(b'\n')) => {
            buf.advance(2);
            Ok(true)
        }
        _ => Err(BodyError::MissingCrlf),
    }
}

/// `*( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] )` (RFC 9112 §7.1.1),
/// plus trailing whitespace — so whitespace alone after the size (`5 `) is BWS before an
/// empty extension list, which Envoy accepts too.
fn valid_extensions(ext: &[u8]) -> bool {
    let mut i = 0;
    while i < ext.len() {
        i = skip_ws(ext, i);
        if i == ext.len() {
            break;
        }
        if ext.get(i) != Some(&b';') {
            return false;
        }
        i = skip_ws(ext, i + 1);
        let name = token_len(&ext[i..]);
        if name == 0 {
            return false;
        }
        i = skip_ws(ext, i + name);
        if ext.get(i) == Some(&b'=') {
            i = skip_ws(ext, i + 1);
            let value = match ext.get(i) {
                Some(b'"') => quoted_len(&ext[i..]),
                _ => token_len(&ext[i..]),
            };
            if value == 0 {
                return false;
            }
            i = skip_ws(ext, i + value);
        }
    }
    true
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while matches!(s.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

/// Length of the `token` (RFC 9110 §5.6.2) at the start of `s`.
fn token_len(s: &[u8]) -> usize {
    s.iter()
        .take_while(|&&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
        .count()
}

/// Length of the `quoted-string` (RFC 9110 §5.6.4) at the start of `s`, quotes included; 0
/// when unterminated or holding a byte it may not.
fn quoted_len(s: &[u8]) -> usize {
    let text = |b: u8| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80;
    let mut i = 1;
    while let Some(&b) = s.get(i) {
        match b {
            b'"' => return i + 1,
            b'\\' if s.get(i + 1).is_some_and(|&n| text(n)) => i += 2,
            b'\\' => return 0,
            _ if text(b) => i += 1,
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(framing: Framing, input: &[u8]) -> (Result<Vec<u8>, BodyError>, BytesMut) {
        let mut buf = BytesMut::from(input);
        let mut dec = BodyDecoder::new(&framing, &Limits::default());
        let mut body = Vec::new();
        let result = loop {
            match dec.decode(&mut buf) {
                Ok(BodyEvent::Data(d)) => body.extend_from_slice(&d),
                Ok(BodyEvent::NeedMore) => break dec.at_eof().map(|()| body),
                Ok(BodyEvent::Done { .. }) => break Ok(body),
                Err(e) => break Err(e),
            }
        };
        (result, buf)
    }

    #[test]
    fn content_length_stops_at_the_end() {
        let (body, rest) = decode_all(Framing::Length(5), b"helloGET /");
        assert_eq!(body.unwrap(), b"hello");
        assert_eq!(&rest[..], b"GET /");
        let (body, _) = decode_all(Framing::Length(6), b"hello");
        assert_eq!(body, Err(BodyError::Incomplete));
    }

    #[test]
    fn data_is_zero_copy() {
        let mut buf = BytesMut::from(&b"hello world"[..]);
        let start = buf.as_ptr();
        let mut dec = BodyDecoder::new(&Framing::Length(5), &Limits::default());
        let BodyEvent::Data(d) = dec.decode(&mut buf).unwrap() else {
            panic!("expected data");
        };
        assert_eq!(d.as_ptr(), start);
        assert!(dec.is_done());
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            BodyEvent::Done { trailers: None }
        );
    }

    #[test]
    fn until_close() {
        let mut buf = BytesMut::from(&b"abc"[..]);
        let mut dec = BodyDecoder::new(&Framing::UntilClose, &Limits::default());
        assert_eq!(dec.decode(&mut buf).unwrap(), BodyEvent::Data("abc".into()));
        assert_eq!(dec.decode(&mut buf).unwrap(), BodyEvent::NeedMore);
        assert!(!dec.is_done());
        assert_eq!(dec.at_eof(), Ok(()));
        assert!(dec.is_done());
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let input = b"5;a=b;c=\"q\\\"x\"\r\nhello\r\n1 ; x\r\n!\r\n2 \t\r\n!!\r\n0\r\nX-Sum: 1\r\nContent-Length: 9\r\n\r\nNEXT";
        let mut buf = BytesMut::from(&input[..]);
        let mut dec = BodyDecoder::new(&Framing::Chunked, &Limits::default());
        let mut body = Vec::new();
        let trailers = loop {
            match dec.decode(&mut buf).unwrap() {
                BodyEvent::Data(d) => body.extend_from_slice(&d),
                BodyEvent::NeedMore => panic!("complete input"),
                BodyEvent::Done { trailers } => break trailers.unwrap(),
            }
        };
        assert_eq!(body, b"hello!!!");
        assert_eq!(trailers.get("x-sum").unwrap(), "1");
        assert!(!trailers.contains("content-length"));
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn chunk_errors() {
        let cases: &[(&[u8], BodyError)] = &[
            (b"g\r\n", BodyError::InvalidChunkSize),
            (b"\r\n", BodyError::InvalidChunkSize),
            (
                b"0x5\r\nhello\r\n0\r\n\r\n",
                BodyError::InvalidChunkExtension,
            ),
            (b"-5\r\n", BodyError::InvalidChunkSize),
            (b"+5\r\n", BodyError::InvalidChunkSize),
            (b" 5\r\nhello\r\n0\r\n\r\n", BodyError::InvalidChunkSize),
            (b"5 x\r\nhello\r\n", BodyError::InvalidChunkExtension),
            (b"5 ;\r\nhello\r\n", BodyError::InvalidChunkExtension),
            (b"10000000000000000\r\n", BodyError::ChunkSizeOverflow),
            (b"5\nhello\r\n", BodyError::MissingCrlf),
            (b"5\r\nhelloXX0\r\n\r\n", BodyError::MissingCrlf),
            (b"5\r\nhello\n0\r\n\r\n", BodyError::MissingCrlf),
            (b"5;\r\nhello\r\n", BodyError::InvalidChunkExtension),
            (b"5;a=\r\nhello\r\n", BodyError::InvalidChunkExtension),
            (b"5;a=\"x\r\nhello\r\n", BodyError::InvalidChunkExtension),
            (b"5;a\rb\r\nhello\r\n", BodyError::InvalidChunkExtension),
            (b"0\r\nX: 1\n\r\n", BodyError::MissingCrlf),
            (b"0\r\n\n", BodyError::MissingCrlf),
            (b"0\r\nX : 1\r\n\r\n", BodyError::InvalidTrailers),
            (b"0\r\nX: 1\r\n fold\r\n\r\n", BodyError::InvalidTrailers),
            (b"5\r\nhel", BodyError::Incomplete),
            (b"0\r\n", BodyError::Incomplete),
        ];
        for (input, err) in cases {
            let (result, _) = decode_all(Framing::Chunked, input);
            assert_eq!(result, Err(*err), "{:?}", String::from_utf8_lossy(input));
        }
    }

    /// fuzz/http1_codec's arrival check: `g\n` was `InvalidChunkSize` when `g` arrived alone and
    /// `MissingCrlf` when the line came whole.
    #[test]
    fn a_chunk_line_error_does_not_depend_on_arrival() {
        for input in [&b"g\n"[..], b"\n", b" \n", b";x\n"] {
            let (whole, _) = decode_all(Framing::Chunked, input);
            let mut dec = BodyDecoder::new(&Framing::Chunked, &Limits::default());
            let mut buf = BytesMut::from(&input[..1]);
            let first = dec.decode(&mut buf);
            let cut = match first {
                Ok(BodyEvent::NeedMore) => {
                    buf.extend_from_slice(&input[1..]);
                    dec.decode(&mut buf)
                }
                other => other,
            };
            assert_eq!(whole, Err(BodyError::InvalidChunkSize), "{input:?}");
            assert_eq!(cut, Err(BodyError::InvalidChunkSize), "{input:?}");
        }
    }

    #[test]
    fn chunk_line_and_extension_bounds() {
        let mut long = b"5;x=".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_CHUNK_LINE));
        long.extend_from_slice(b"\r\nhello\r\n");
        assert_eq!(
            decode_all(Framing::Chunked, &long).0,
            Err(BodyError::ChunkLineTooLong)
        );
        // Unterminated: refused once the line cannot fit, not buffered forever.
        assert_eq!(
            decode_all(Framing::Chunked, &long[..MAX_CHUNK_LINE + 2]).0,
            Err(BodyError::ChunkLineTooLong)
        );
        let mut many = Vec::new();
        let ext = format!(";e={}", "v".repeat(1000));
        for _ in 0..17 {
            many.extend_from_slice(format!("1{ext}\r\nx\r\n").as_bytes());
        }
        assert_eq!(
            decode_all(Framing::Chunked, &many).0,
            Err(BodyError::ChunkExtensionsTooLarge)
        );
        // Leading zeros are not an overflow.
        let (body, _) = decode_all(Framing::Chunked, b"000000000000000000001\r\nz\r\n0\r\n\r\n");
        assert_eq!(body.unwrap(), b"z");
    }

    #[test]
    fn trailer_limits() {
        let limits = Limits {
            max_head_bytes: 16,
            max_headers: 1,
        };
        let mut dec = BodyDecoder::new(&Framing::Chunked, &limits);
        let mut buf = BytesMut::from(&b"0\r\nA: 1\r\nB: 2\r\n\r\n"[..]);
        assert_eq!(dec.decode(&mut buf), Err(BodyError::TooManyTrailers));
        let mut dec = BodyDecoder::new(&Framing::Chunked, &limits);
        let mut buf = BytesMut::from(&b"0\r\nA: 0123456789abcdef\r\n\r\n"[..]);
        assert_eq!(dec.decode(&mut buf), Err(BodyError::TrailersTooLarge));
    }
}
