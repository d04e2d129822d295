//! Fuzz target: the http_inspector sniffing (src/net/inspect/http.rs).
//!
//! Checks, for any bytes: no panic; a shorter prefix only ever says `NeedMore` or what the
//! whole input says; an HTTP/1 answer is decided by the bytes up to the first LF (unless they
//! are still a prefix of the h2 preface), h2c by the 24-byte preface; only the HTTP answers
//! name an application protocol.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/net/inspect/http.rs"]
mod http;

use http::{detect_http, HttpDetect, MAX_INSPECT_SIZE};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let whole = detect_http(data);
    let step = (data.len() / 128).max(1);
    for n in (0..data.len()).step_by(step) {
        let d = detect_http(&data[..n]);
        assert!(
            d == HttpDetect::NeedMore || d == whole,
            "prefix {n}: {d:?}, whole: {whole:?}"
        );
    }
    match whole {
        HttpDetect::Http10 | HttpDetect::Http11 => {
            let lf = data
                .iter()
                .position(|&b| b == b'\n')
                .expect("an HTTP/1 line ends in LF");
            assert!(lf < MAX_INSPECT_SIZE);
            // The line decides, unless it is still a prefix of the preface ("PRI * HTTP/2.0").
            if !PREFACE.starts_with(&data[..=lf]) {
                assert_eq!(detect_http(&data[..=lf]), whole);
            }
            assert_ne!(detect_http(&data[..lf]), whole);
        }
        HttpDetect::H2c => assert!(data.starts_with(PREFACE)),
        _ => {}
    }
    let named = matches!(
        whole,
        HttpDetect::Http10 | HttpDetect::Http11 | HttpDetect::H2c
    );
    assert_eq!(whole.application_protocol().is_some(), named);
});
