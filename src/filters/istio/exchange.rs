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
/// did not (nothing is written or read), the peer once its frame is read. A frame that is
/// not one (wrong magic, too large, not a `Struct`) is an error: the connection closes.
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
    transport.read_exact(&mut header).await?;
    let magic = u32::from_be_bytes(header[..4].try_into().expect("4 bytes"));
    let length = u32::from_be_bytes(header[4..].try_into().expect("4 bytes")) as usize;
    if magic != EXCHANGE_MAGIC {
        return Err(invalid(
            "the peer's first bytes are not a metadata exchange frame",
        ));
    }
    if length > MAX_FRAME {
        return Err(invalid("the peer's metadata exchange frame is too large"));
    }
    let mut payload = vec![0u8; length];
    transport.read_exact(&mut payload).await?;
    peer_in(&payload)
        .map(|peer| Some(Rc::new(peer)))
        .ok_or_else(|| invalid("the peer's metadata exchange frame holds no node metadata"))
}

/// The peer in a frame's payload.
fn peer_in(payload: &[u8]) -> Option<Peer> {
    let any = Any::decode(payload).ok()?;
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
