//! Protocol layer (tests): malformed and request-smuggling HTTP/1.1 requests with the status
//! the proxy must answer, in one place so unit tests and end-to-end tests share them. Every
//! input is a whole request as a client would send it (head and body); after the answer the
//! connection is closed.
use super::Limits;

/// `(name, raw request bytes, expected status)`.
pub type Case = (&'static str, &'static [u8], u16);

/// Malformed requests, each refused with its status, whatever the limits (as long as they
/// admit a few hundred bytes and a dozen headers).
pub const MALFORMED: &[Case] = &[
    // Request line.
    ("version_lower_case", b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
    ("version_2_0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ("version_0_9", b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
    ("version_1_10", b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
    ("version_garbage", b"GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400),
    ("version_trailing_bytes", b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400),
    ("http_0_9_request", b"GET /\r\n\r\n", 400),
    ("double_space_after_method", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("tab_separator", b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("space_in_target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("nul_in_target", b"GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("control_in_method", b"G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("empty_method", b" / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("non_ascii_target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("fragment_in_target", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("unsupported_scheme", b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("userinfo_in_target", b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("empty_authority", b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("asterisk_not_options", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("relative_target", b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("connect_origin_form", b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("connect_without_port", b"CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("bare_cr_after_version", b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
    ("bare_cr_before_request", b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    // Methods: Envoy's list only (syntax.rs), case-sensitive; checked before the version.
    ("method_lower_case", b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("method_unknown", b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("method_query", b"QUERY / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("method_m_search", b"M-SEARCH / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("h2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    ("unknown_method_http_2_0", b"BREW / HTTP/2.0\r\nHost: a\r\n\r\n", 400),
    // Bare LF line ends (RFC 9112 §2.2 permits refusing them; a smuggling vector).
    ("bare_lf_line_ends", b"GET / HTTP/1.1\nHost: a\nX: 1\n\n", 400),
    ("bare_lf_after_request_line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
    ("bare_lf_after_field", b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n", 400),
    ("bare_lf_ending_head", b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
    (
        "bare_lf_hiding_a_field",
        b"POST / HTTP/1.1\r\nHost: a\r\nX: 1\nContent-Length: 5\r\n\r\nhello",
        400,
    ),
    // Host.
    ("missing_host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("duplicate_host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("host_with_space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("host_with_path", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    ("host_bad_port", b"GET / HTTP/1.1\r\nHost: a:abc\r\n\r\n", 400),
    ("host_two_ports", b"GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n", 400),
    ("host_port_without_host", b"GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400),
    ("host_userinfo", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
    ("host_bad_percent_escape", b"GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n", 400),
    ("host_unbracketed_ipv6", b"GET / HTTP/1.1\r\nHost: ::1\r\n\r\n", 400),
    ("host_bad_ipv6", b"GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n", 400),
    ("host_unclosed_bracket", b"GET / HTTP/1.1\r\nHost: [::1:80\r\n\r\n", 400),
    ("absolute_form_bad_port", b"GET http://a:abc/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    // Field syntax.
    ("space_before_colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    ("tab_before_colon", b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400),
    ("obs_fold_space", b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", 400),
    ("obs_fold_tab", b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\t2\r\n\r\n", 400),
    ("space_before_first_field", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    ("missing_colon", b"GET / HTTP/1.1\r\nHost a\r\n\r\n", 400),
    ("empty_field_name", b"GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", 400),
    ("nul_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400),
    ("control_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400),
    ("del_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400),
    ("bare_cr_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
    ("double_cr_line_end", b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", 400),
    ("delimiter_in_name", b"GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n", 400),
    ("non_ascii_name", b"GET / HTTP/1.1\r\nHost: a\r\n\xc3\x9c: 1\r\n\r\n", 400),
    // Connection.
    (
        "connection_nominates_xff",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Forwarded-For\r\n\r\n",
        400,
    ),
    (
        "connection_nominates_pseudo",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: :authority\r\n\r\n",
        400,
    ),
    (
        "connection_ten_tokens",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: a,b,c,d,e,f,g,h,i,j\r\n\r\n",
        400,
    ),
    // Content-Length.
    ("cl_negative", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    ("cl_plus_sign", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx", 400),
    ("cl_hex", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x1\r\n\r\nx", 400),
    ("cl_inner_space", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r\n", 400),
    ("cl_list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx", 400),
    ("cl_empty", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400),
    ("cl_letters", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400),
    (
        "cl_overflow",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n",
        400,
    ),
    (
        "cl_duplicate_different",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy",
        400,
    ),
    (
        "cl_duplicate_identical",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        400,
    ),
    // Transfer-Encoding.
    (
        "cl_then_te",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te_then_cl",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te_chunked_not_final",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te_chunked_twice_in_list",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    (
        "te_chunked_twice_in_lines",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    (
        "te_chunked_twice_then_gzip",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te_empty",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n",
        400,
    ),
    (
        "te_unknown_coding",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
    ),
    (
        "te_identity",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
        501,
    ),
    (
        "te_gzip_then_chunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    (
        "te_xchunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    (
        "te_chunked_with_parameter",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n0\r\n\r\n",
        501,
    ),
    (
        "te_space_before_colon",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te_vertical_tab",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te_obs_fold",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te_on_http10",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "connect_with_body",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nContent-Length: 5\r\n\r\nhello",
        400,
    ),
    (
        "connect_chunked",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    // Chunked bodies.
    ("chunk_size_not_hex", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\ng\r\n", 400),
    ("chunk_size_negative", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n", 400),
    ("chunk_size_0x_prefix", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x1\r\nx\r\n0\r\n\r\n", 400),
    ("chunk_size_empty", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\nx\r\n0\r\n\r\n", 400),
    (
        "chunk_size_overflow",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nx\r\n0\r\n\r\n",
        400,
    ),
    ("chunk_size_leading_space", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n 1\r\nx\r\n0\r\n\r\n", 400),
    ("chunk_size_space_then_junk", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 x\r\nx\r\n0\r\n\r\n", 400),
    ("chunk_size_bare_lf", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n0\r\n\r\n", 400),
    ("chunk_data_longer_than_size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk_data_bare_lf", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\n0\r\n\r\n", 400),
    ("chunk_ext_bare_cr", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a\rb\r\nx\r\n0\r\n\r\n", 400),
    ("chunk_ext_bare_lf_in_quotes", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"\n\"\r\nx\r\n0\r\n\r\n", 400),
    ("chunk_ext_unterminated_quote", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"x\r\nx\r\n0\r\n\r\n", 400),
    ("chunk_ext_empty_name", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;=x\r\nx\r\n0\r\n\r\n", 400),
    ("last_chunk_bare_lf", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\n", 400),
    ("final_crlf_bare_lf", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n", 400),
    ("trailer_bare_lf", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\r\n", 400),
    ("trailer_obs_fold", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n 2\r\n\r\n", 400),
    ("trailer_space_before_colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX : 1\r\n\r\n", 400),
    // Truncated bodies (the client closes early).
    ("cl_body_truncated", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nshort", 400),
    ("chunked_body_truncated", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", 400),
];

/// Unusual but valid requests that must be accepted whole (nothing refused, nothing left
/// over): lenient where RFC 9112 allows it, so strictness does not turn away real clients.
pub const ACCEPTED: &[(&str, &[u8])] = &[
    ("leading_empty_lines", b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    // Outside any message, so no framing can hang on it (Envoy skips these too).
    ("leading_bare_lf_lines", b"\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("empty_value", b"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n"),
    ("ows_around_value", b"GET / HTTP/1.1\r\nHost: a\r\nX: \t v \t\r\n\r\n"),
    ("obs_text_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n"),
    ("method_purge", b"PURGE /cache HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("method_webdav", b"PROPFIND /dav HTTP/1.1\r\nHost: a\r\nDepth: 1\r\n\r\n"),
    ("method_msearch", b"MSEARCH / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("version_1_2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
    ("version_1_9_post", b"POST / HTTP/1.9\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"),
    ("percent_encoded_path", b"GET /a%2Fb%20c?q=%7C HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("http10_without_host", b"GET / HTTP/1.0\r\n\r\n"),
    ("empty_host", b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
    ("ipv6_host", b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"),
    ("ipv4_host", b"GET / HTTP/1.1\r\nHost: 192.0.2.1:80\r\n\r\n"),
    ("host_empty_port", b"GET / HTTP/1.1\r\nHost: a.example:\r\n\r\n"),
    ("host_percent_escape", b"GET / HTTP/1.1\r\nHost: a%2Db.example\r\n\r\n"),
    ("absolute_form", b"GET http://a.example:81/p?q HTTP/1.1\r\nHost: ignored\r\n\r\n"),
    ("options_asterisk", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("connect", b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"),
    ("cl_leading_zeros", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 003\r\n\r\nabc"),
    ("cl_zero", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
    (
        "te_upper_case",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    ),
    (
        "te_empty_list_elements",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked,\r\n\r\n0\r\n\r\n",
    ),
    (
        "chunk_extensions",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          3 ; a ; b = c ; d=\"e\\\"f\"\r\nabc\r\n0;last\r\n\r\n",
    ),
    (
        "chunk_size_trailing_whitespace",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\nx\r\n2\t \r\nyz\r\n0 \r\n\r\n",
    ),
    (
        "chunk_size_upper_hex_leading_zeros",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n000A\r\n0123456789\r\n0\r\n\r\n",
    ),
    (
        "trailers",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n\
          0\r\nGrpc-Status: 0\r\nGrpc-Message: ok\r\n\r\n",
    ),
    (
        "connection_nominates_custom",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Hop, keep-alive\r\nX-Hop: 1\r\n\r\n",
    ),
    (
        "expect_continue",
        b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    ),
    (
        "websocket_upgrade",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ),
];

/// Requests over `limits`, built for them: the request line alone over the head limit (414),
/// a header section over it (431), one header too many (431), trailers over it (431).
pub fn oversized(limits: &Limits) -> Vec<(&'static str, Vec<u8>, u16)> {
    let long_line = format!(
        "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
        "a".repeat(limits.max_head_bytes)
    );
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(limits.max_head_bytes)
    );
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..limits.max_headers {
        many.push_str(&format!("X-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    let big_trailer = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Big: {}\r\n\r\n",
        "t".repeat(limits.max_head_bytes)
    );
    vec![
        ("request_line_too_long", long_line.into_bytes(), 414),
        ("header_section_too_large", big_header.into_bytes(), 431),
        ("too_many_headers", many.into_bytes(), 431),
        ("trailers_too_large", big_trailer.into_bytes(), 431),
    ]
}
