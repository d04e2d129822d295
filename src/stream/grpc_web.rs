//! Stream layer: the gRPC-Web wire format (what `envoy.filters.http.grpc_web` translates) —
//! a `grpc-web-text` body is base64 (decoded as it arrives, in whole 4-character groups, each
//! message possibly padded on its own), and a response's trailers travel as a last message
//! flagged `0x80` whose payload is `name:value\r\n` lines.
use base64::{engine::general_purpose::STANDARD, Engine};
use bytes::{BufMut, Bytes, BytesMut};

use super::headers::{Headers, ResponseHead};

/// Whether a response head is gRPC-Web's (the filter rewrote a gRPC one).
pub fn is_grpc_web(head: &ResponseHead) -> bool {
    head.headers
        .get("content-type")
        .is_some_and(|v| v.starts_with(b"application/grpc-web"))
}

/// How a gRPC-Web call is carried, from its request's `content-type` and `accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcWebMode {
    /// The request body is base64 (`application/grpc-web-text`).
    pub text_request: bool,
    /// The response body goes back in base64 (`accept` asks for text, as Envoy decides).
    pub text_response: bool,
}

/// Decodes a `grpc-web-text` request body chunk by chunk.
#[derive(Debug, Default)]
pub struct TextDecoder {
    /// Characters of an incomplete 4-character group.
    carry: Vec<u8>,
}

/// A `grpc-web-text` body that is not base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadBase64;

impl TextDecoder {
    /// The bytes `chunk` completes (whole groups); the rest waits for the next chunk.
    pub fn chunk(&mut self, chunk: &[u8]) -> Result<Bytes, BadBase64> {
        self.carry.extend_from_slice(chunk);
        let whole = self.carry.len() / 4 * 4;
        let mut out = Vec::with_capacity(whole / 4 * 3);
        // Group by group: a padded group may end one message and another start after it.
        for group in self.carry[..whole].chunks(4) {
            STANDARD
                .decode_vec(group, &mut out)
                .map_err(|_| BadBase64)?;
        }
        self.carry.drain(..whole);
        Ok(out.into())
    }

    /// The body ended: a partial group left over is an error.
    pub fn finish(&self) -> Result<(), BadBase64> {
        match self.carry.is_empty() {
            true => Ok(()),
            false => Err(BadBase64),
        }
    }
}

/// Turns a gRPC response body into a gRPC-Web one: the data as it is (binary) or base64
/// (text), then the trailers as a last message.
#[derive(Debug)]
pub struct ResponseEncoder {
    text: bool,
    /// Bytes not yet encoded (text: fewer than 3).
    carry: Vec<u8>,
}

impl ResponseEncoder {
    pub fn new(text: bool) -> Self {
        Self {
            text,
            carry: Vec::new(),
        }
    }

    /// A chunk of the upstream's body, as sent downstream.
    pub fn data(&mut self, chunk: Bytes) -> Bytes {
        if !self.text {
            return chunk;
        }
        self.carry.extend_from_slice(&chunk);
        let whole = self.carry.len() / 3 * 3;
        let encoded = STANDARD.encode(&self.carry[..whole]);
        self.carry.drain(..whole);
        encoded.into()
    }

    /// The end of the body: what is left, then the trailers message (when there are any).
    pub fn finish(&mut self, trailers: Option<&Headers>) -> Bytes {
        let mut tail = std::mem::take(&mut self.carry);
        if let Some(trailers) = trailers {
            let mut fields = BytesMut::new();
            for field in trailers.iter() {
                fields.put_slice(&field.name); // lower-case, as every head's names
                fields.put_u8(b':');
                fields.put_slice(&field.value);
                fields.put_slice(b"\r\n");
            }
            let mut message = Vec::with_capacity(5 + fields.len());
            message.push(0x80);
            message.extend_from_slice(&(fields.len() as u32).to_be_bytes());
            message.extend_from_slice(&fields);
            match self.text {
                // The data's last group is padded on its own, as Envoy writes it.
                true => {
                    let mut encoded = STANDARD.encode(&tail);
                    encoded.push_str(&STANDARD.encode(&message));
                    return encoded.into();
                }
                false => tail.extend_from_slice(&message),
            }
        }
        match self.text {
            true => STANDARD.encode(&tail).into(),
            false => tail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_bodies_decode_across_any_chunking_and_padded_groups() {
        let messages = [STANDARD.encode(b"\0\0\0\0\x01a"), STANDARD.encode(b"xyz")];
        let body = messages.concat(); // "AAAAAAFh" + "eHl6": also padded mid-body below
        let padded = [STANDARD.encode(b"ab"), STANDARD.encode(b"c")].concat();
        for (text, want) in [
            (body.as_bytes(), b"\0\0\0\0\x01axyz".to_vec()),
            (padded.as_bytes(), b"abc".to_vec()),
        ] {
            for size in 1..=text.len() {
                let mut decoder = TextDecoder::default();
                let mut out = Vec::new();
                for chunk in text.chunks(size) {
                    out.extend_from_slice(&decoder.chunk(chunk).unwrap());
                }
                decoder.finish().unwrap();
                assert_eq!(out, want, "chunks of {size}");
            }
        }
        let mut decoder = TextDecoder::default();
        assert_eq!(decoder.chunk(b"ab!c"), Err(BadBase64));
        let mut decoder = TextDecoder::default();
        decoder.chunk(b"abc").unwrap();
        assert_eq!(decoder.finish(), Err(BadBase64));
    }

    #[test]
    fn trailers_become_the_last_message() {
        let mut trailers = Headers::default();
        trailers.append("grpc-status", "0");
        trailers.append("grpc-message", "ok");
        let mut binary = ResponseEncoder::new(false);
        assert_eq!(
            binary.data(Bytes::from_static(b"\0\0\0\0\x01z")),
            &b"\0\0\0\0\x01z"[..]
        );
        let lines = b"grpc-status:0\r\ngrpc-message:ok\r\n";
        let mut want = vec![0x80, 0, 0, 0, lines.len() as u8];
        want.extend_from_slice(lines);
        assert_eq!(binary.finish(Some(&trailers)), want);

        let mut text = ResponseEncoder::new(true);
        let mut out = Vec::new();
        for byte in b"\0\0\0\0\x01z" {
            out.extend_from_slice(&text.data(Bytes::copy_from_slice(&[*byte])));
        }
        out.extend_from_slice(&text.finish(Some(&trailers)));
        let mut decoder = TextDecoder::default();
        let decoded = decoder.chunk(&out).unwrap();
        assert_eq!(&decoded[..6], b"\0\0\0\0\x01z");
        assert_eq!(&decoded[6..], want);
    }
}
