//! Fuzz target: the HTTP/2 downstream path (src/fuzzing.rs drives the `h2` server with the
//! connection manager's settings and src/protocol/http2's request conversion).
//!
//! Checks, for any bytes a client may send: no panic, no hang, and memory within libFuzzer's
//! RSS limit (the windows and header-list limits bound what one connection may hold).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shardproxy::fuzzing::http2_downstream(data);
});
