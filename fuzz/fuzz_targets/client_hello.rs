//! Fuzz target: the tls_inspector ClientHello parser (src/net/inspect/client_hello.rs).
//!
//! Checks, for any bytes: no panic; a hello's borrowed slices lie inside the buffer and its
//! length inside both the input and the limit; a shorter prefix only ever says `NeedMore` or
//! what the whole input says; the limit is exact (the hello's length passes, one byte less is
//! `TooLarge`); the same hello cut into records of another size reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/net/inspect/client_hello.rs"]
mod client_hello;

use client_hello::{detect, ClientHello, Detect, Invalid, MAX_CLIENT_HELLO_SIZE};

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    let range = buf.as_ptr_range();
    let whole = detect(&mut buf, MAX_CLIENT_HELLO_SIZE);
    if let Detect::Hello(h) = whole {
        let inside = |s: &[u8]| range.start <= s.as_ptr() && s.as_ptr_range().end <= range.end;
        assert!(h.wire_len() <= data.len() && h.wire_len() <= MAX_CLIENT_HELLO_SIZE);
        if let Some(name) = h.server_name() {
            assert!(inside(name.as_bytes()) && !name.is_empty() && name.len() <= 255);
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        }
        assert!(h.alpn().all(|p| inside(p) && !p.is_empty()));
        if h.is_sslv2() {
            assert!(h.server_name().is_none() && h.alpn().next().is_none() && !h.supports_tls13());
        }
        check_limit(data, &h);
        if !h.is_sslv2() {
            check_refragmented(data, &h);
        }
    }
    for n in prefixes(data.len()) {
        let mut prefix = data[..n].to_vec();
        let d = detect(&mut prefix, MAX_CLIENT_HELLO_SIZE);
        assert!(
            d == Detect::NeedMore || d == whole,
            "prefix {n}: {d:?}, whole: {whole:?}"
        );
    }
});

/// Some prefix lengths: all of them for short inputs, a spread for longer ones.
fn prefixes(len: usize) -> impl Iterator<Item = usize> {
    let step = (len / 64).max(1);
    (0..len).step_by(step).chain(len.checked_sub(1))
}

/// The hello fits a limit of exactly its length, not one byte less.
fn check_limit(data: &[u8], h: &ClientHello<'_>) {
    let len = h.wire_len();
    assert_eq!(detect(&mut data.to_vec(), len), Detect::Hello(*h));
    assert_eq!(
        detect(&mut data.to_vec(), len - 1),
        Detect::Invalid(Invalid::TooLarge)
    );
}

/// The same handshake message in records of another size gives the same hello.
fn check_refragmented(data: &[u8], h: &ClientHello<'_>) {
    let mut message = Vec::new();
    let mut pos = 0;
    while pos < h.wire_len() {
        let len = usize::from(u16::from_be_bytes([data[pos + 3], data[pos + 4]]));
        message.extend_from_slice(&data[pos + 5..pos + 5 + len]);
        pos += 5 + len;
    }
    let message_len = 4
        + (usize::from(message[1]) << 16 | usize::from(message[2]) << 8)
        + usize::from(message[3]);
    message.truncate(message_len);
    let size = 1 + usize::from(data[data.len() / 2]) % 300;
    let mut wire = Vec::new();
    for chunk in message.chunks(size) {
        wire.extend_from_slice(&[22, 3, 3]);
        wire.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        wire.extend_from_slice(chunk);
    }
    let wire_len = wire.len();
    match detect(&mut wire, usize::MAX) {
        Detect::Hello(again) => {
            assert_eq!(again.server_name(), h.server_name());
            assert!(again.alpn().eq(h.alpn()));
            assert_eq!(again.supports_tls13(), h.supports_tls13());
            assert_eq!(again.wire_len(), wire_len);
        }
        d => panic!("records of {size}: {d:?}"),
    }
}
