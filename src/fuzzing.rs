//! Entry points for the cargo-fuzz targets in fuzz/ (compiled only with `cfg(fuzzing)`): the
//! HTTP/2 downstream path — the `h2` server with the settings the connection manager gives
//! it, fed arbitrary bytes, every request it yields converted as the connection manager
//! converts it, its body read, and a response sent — and the HTTP/1 codec, re-exported for
//! the `http1_codec` target to drive.
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_lite::future;
use model::http::Http2Options;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{protocol::http2, stream::headers::ResponseHead};

/// The HTTP/1 codec (parsers, body decoder, encoders) and the head types it reads and writes.
pub use crate::{protocol::http1, stream::headers};

/// At most this many streams are served per input (a flood still exercises the codec).
const MAX_STREAMS: usize = 64;

/// Runs one connection whose client sends `input`, then closes.
pub fn http2_downstream(input: &[u8]) {
    let io = Scripted {
        input: Bytes::copy_from_slice(input),
    };
    let builder = http2::server(&Http2Options::default(), 1 << 20, 60 << 10);
    future::block_on(async {
        let Ok(mut conn) = builder.handshake::<_, Bytes>(io).await else {
            return;
        };
        let mut served = 0;
        while let Some(Ok((request, mut respond))) = conn.accept().await {
            served += 1;
            match http2::incoming(request) {
                Ok(mut incoming) => {
                    while let Some(Ok(chunk)) = incoming.body.data().await {
                        let _ = incoming.body.flow_control().release_capacity(chunk.len());
                    }
                    let head = ResponseHead {
                        status: 200,
                        version: incoming.head.version,
                        headers: incoming.head.headers,
                    };
                    let _ = respond.send_response(http2::response(&head, Some(0)), true);
                }
                Err(_) => respond.send_reset(h2::Reason::PROTOCOL_ERROR),
            }
            if served == MAX_STREAMS {
                break;
            }
        }
    });
}

/// A client that sends its script, then closes; what the server writes is dropped.
struct Scripted {
    input: Bytes,
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.input.len().min(buf.remaining());
        let chunk = self.input.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
