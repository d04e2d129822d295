//! Istio's TCP metadata exchange (`istio-peer-exchange`): on a TLS connection that negotiated
//! the configured ALPN protocol, each side writes one frame (magic, length, a
//! `google.protobuf.Any` holding a `Struct` with its node metadata and id) before any other
//! byte, and reads the other's. Both sides write first, so neither waits on the other.
use std::{io, rc::Rc};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use model::istio::{MetadataExchange, EXCHANGE_MAGIC, METADATA_ID_KEY, METADATA_KEY, STRUCT_TYPE};
use prost::Message;
use prost_types::{value::Kind, Any, Struct};

use super::peer::{string, Peer};
use crate::net::transport::Transport;

/// Larger frames are refused: node metadata is a few KiB.
const MAX_FRAME: usize = 64 * 1024;

/// Runs the exchange on `transport` when it negotiated `config.protocol`: `Ok(None)` when it
/// did not (nothing is written or read), the peer once its frame is read. A peer that
/// negotiated the protocol but does not speak it is taken as Istio's filter takes it ("peer
/// missing TCP MetadataExchange filter"): no peer, and its bytes go on to the relay — the
/// first ones when they do not start with the frame's magic (or end before 8 bytes), the
/// payload when it is not a `google.protobuf.Any`. A payload that holds no node metadata is
/// consumed without a peer. A frame larger than 64 KiB is an error: the connection closes.
pub async fn exchange(
    transport: &mut Transport,
    config: &MetadataExchange,
) -> io::Result<Option<Rc<Peer>>> {
    let negotiated = transport.tls().and_then(|t| t.connection().alpn_protocol());
    if negotiated != Some(&config.protocol[..]) {
        return Ok(None);
    }
    transport.write_all(&config.local.frame).await?;
    transport.flush().await?;
    let mut header = [0u8; 8];
    let got = read_up_to(transport, &mut header).await?;
    let magic = u32::from_be_bytes(header[..4].try_into().expect("4 bytes"));
    if got < header.len() || magic != EXCHANGE_MAGIC {
        give_back(transport, &header[..got]);
        return Ok(None);
    }
    let length = u32::from_be_bytes(header[4..].try_into().expect("4 bytes")) as usize;
    if length > MAX_FRAME {
        return Err(invalid("the peer's metadata exchange frame is too large"));
    }
    let mut payload = vec![0u8; length];
    transport.read_exact(&mut payload).await?;
    match Any::decode(payload.as_slice()) {
        Ok(any) => Ok(peer_in(&any).map(Rc::new)),
        Err(_) => {
            give_back(transport, &payload);
            Ok(None)
        }
    }
}

/// Reads until `buf` is full or the peer closed its side; how much was read.
async fn read_up_to(transport: &mut Transport, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match transport.read(&mut buf[got..]).await? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Puts `bytes` back in front of what the connection reads next (the exchange runs on TLS
/// only: it needs the negotiated protocol).
fn give_back(transport: &mut Transport, bytes: &[u8]) {
    if let Some(tls) = transport.tls_mut() {
        tls.unread(bytes);
    }
}

/// The peer in a frame's payload.
fn peer_in(any: &Any) -> Option<Peer> {
    if any.type_url != STRUCT_TYPE {
        return None;
    }
    let both = Struct::decode(any.value.as_slice()).ok()?;
    let id = both
        .fields
        .get(METADATA_ID_KEY)
        .and_then(string)
        .unwrap_or("");
    match both.fields.get(METADATA_KEY).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(metadata)) => Some(Peer::from_struct(metadata, id)),
        _ => None,
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use prost_types::Value;

    use super::*;

    fn text(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.into())),
        }
    }

    fn any(type_url: &str, fields: Vec<(&str, Value)>) -> Any {
        let both = Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        };
        Any {
            type_url: type_url.into(),
            value: both.encode_to_vec(),
        }
    }

    #[test]
    fn a_frame_names_the_peer_only_with_node_metadata_in_a_struct() {
        let metadata = Struct {
            fields: [("WORKLOAD_NAME".to_string(), text("reviews-v1"))].into(),
        };
        let node = Value {
            kind: Some(Kind::StructValue(metadata)),
        };
        let full = any(
            STRUCT_TYPE,
            vec![
                (METADATA_KEY, node.clone()),
                (METADATA_ID_KEY, text("sidecar~1")),
            ],
        );
        let peer = peer_in(&full).unwrap();
        assert_eq!((&*peer.workload, &*peer.id), ("reviews-v1", "sidecar~1"));
        // Istio's filter finds no peer in these, and goes on.
        assert!(peer_in(&any(STRUCT_TYPE, vec![(METADATA_ID_KEY, text("x"))])).is_none());
        assert!(peer_in(&any(STRUCT_TYPE, vec![(METADATA_KEY, text("x"))])).is_none());
        let other = "type.googleapis.com/google.protobuf.StringValue";
        assert!(peer_in(&any(other, vec![(METADATA_KEY, node)])).is_none());
    }
}
