#!/usr/bin/env python3
"""Test driver: the raw-socket corpus of request-smuggling and malformed HTTP/1.1 inputs.

Each case is exact bytes sent on a fresh connection to a proxy whose only route sends
everything to the echo upstream (upstream.py). After the first response the driver sends a
probe request (`GET /probe`) on the same connection and reads until the probe's answer or the
end of the connection, so every case ends in one of: the probe answered (`keep`: the next
request was parsed from the right byte), the connection closed (`close`), or a stall (`hang`).
An outcome is written as the statuses received, each echoed response suffixed with the target
the upstream saw, then that ending, e.g. `400 close` or `200@/a 200@/b keep`.

`expect` is what shardproxy must do (RFC 9112 and issue 3: framing conflicts and malformed
syntax get 400 and close, oversized headers 431, an overlong request line 414). `envoy` is
what Envoy 1.40 does, recorded with `record`; when it differs from `expect`, `why` says why.
Whatever the proxy, no request whose target contains `/smuggled` may ever reach the upstream.

    smuggling.py bootstrap --listen-port P --admin-port A --upstream PORT   # prints JSON
    smuggling.py run --port P --proxy envoy|shardproxy --log UPSTREAM_LOG [--record]
    smuggling.py table     # the Markdown table docs/http-differences.md carries
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from wire import Closed, Conn, Hang

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
MAX_HEADERS_KB = 16
PROBE = b"GET /probe HTTP/1.1\r\nHost: probe.test\r\n\r\n"
CASE_TIMEOUT = 4.0


def bootstrap(listen_port: int, admin_port: int, upstream_port: int) -> dict:
    def addr(port):
        return {"socket_address": {"address": "127.0.0.1", "port_value": port}}

    hcm = {
        "@type": HCM,
        "stat_prefix": "smuggling",
        "codec_type": "HTTP1",
        "max_request_headers_kb": MAX_HEADERS_KB,
        "http_protocol_options": {
            "accept_http_10": True,
            "default_host_for_http_10": "http10.test",
        },
        "route_config": {
            "name": "smuggling",
            "virtual_hosts": [{
                "name": "all",
                "domains": ["*"],
                "routes": [
                    {"match": {"prefix": "/nowhere"},
                     "direct_response": {"status": 404, "body": {"inline_string": "nowhere\n"}}},
                    {"match": {"prefix": "/"}, "route": {"cluster": "echo"}},
                ],
            }],
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }
    return {
        "admin": {"address": addr(admin_port)},
        "static_resources": {
            "listeners": [{
                "name": "smuggling",
                "address": addr(listen_port),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }]}],
            }],
            "clusters": [{
                "name": "echo",
                "type": "STATIC",
                "connect_timeout": "2s",
                "load_assignment": {"cluster_name": "echo", "endpoints": [
                    {"lb_endpoints": [{"endpoint": {"address": addr(upstream_port)}}]}]},
            }],
        },
    }


@dataclass
class Case:
    name: str
    payload: bytes
    expect: str
    envoy: str | None = None  # Envoy 1.40's outcome when it is not `expect`
    why: str = ""             # why shardproxy is expected to differ from Envoy
    half_close: bool = False  # shut the client's write side after the payload (no probe)


def req(head: str, body: bytes = b"") -> bytes:
    """`head` uses `|` for CRLF; the blank line ending the head is added."""
    return head.replace("|", "\r\n").encode("latin-1") + b"\r\n\r\n" + body


H = "Host: s.test"
# Where a smuggled request hides; the driver writes the case name over the dots (same length,
# so Content-Lengths and chunk sizes stay right) to tell which case leaked, if one does.
TAG = b"." * 32
SMUGGLED = b"GET /smuggled/" + TAG + b" HTTP/1.1\r\nHost: s.test\r\n\r\n"
CHUNKED_OK = b"5\r\nhello\r\n0\r\n\r\n"
BIG = "a" * (MAX_HEADERS_KB * 1024 + 100)

# Why shardproxy is stricter than Envoy, by theme (docs/http-differences.md, "Malformed input").
FOLD = ("RFC 9112 §5.2 lets a server either reject obs-fold with 400 or unfold it; issue 3 "
        "asks for 400, so a back end that does not unfold never sees a header the proxy read "
        "differently")
BARE_LF = ("RFC 9112 §2.2 lets a recipient accept a bare LF; issue 3 asks for strictness, and "
           "accepting what a back end may reject is the precondition of smuggling")
BARE_CR = ("RFC 9112 §2.2: a bare CR must be treated as invalid (or replaced by SP); Envoy waits "
           "for an LF that never comes, shardproxy answers 400 at once")
CHUNK = ("RFC 9112 §7.1: chunk-data is followed by CRLF; Envoy skips stray bytes up to the next "
         "LF, so the body it forwards is not the one a strict back end would read")
HOST = ("RFC 9112 §3.2: a request with more than one Host line or an invalid Host value MUST get "
        "400; Envoy joins duplicate Host lines with a comma and routes on the result")
HTTP10_TE = ("RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing; "
             "Envoy decodes it as chunked, shardproxy refuses the classic smuggling form")
TE_ORDER = ("RFC 9112 §6.3: chunked not the final coding of a request MUST get 400 and close; "
            "Envoy answers 501 (also closing)")
URI_TOO_LONG = ("issue 3 and RFC 9110 §15.5.15: an overlong request line is 414; Envoy counts it "
                "against max_request_headers_kb and answers 431")
VERSION = ("RFC 9110 §2.5/§15.6.6: HTTP/2.0 on an HTTP/1 connection is 505; Envoy's parser "
           "takes any unknown version for HTTP/1.0 and proxies it")
MINOR = ("RFC 9110 §2.5: HTTP/1.2 is HTTP/1.x and is answered as HTTP/1.1; Envoy treats it as "
         "HTTP/1.0 and closes")
HTTP09 = "HTTP/0.9 is not supported (RFC 9112 §2.3 obsoletes it); Envoy answers it as HTTP/1.0"
SPACES = ("RFC 9112 §3: the request line has single SPs; the leniency §3 allows is optional and "
          "shardproxy's parser (httparse defaults) takes the strict side")
CR_VALUE = ("RFC 9110 §5.5: CR is not allowed in a field value; Envoy silently drops it and "
            "forwards the rest")
CHUNK_EXT = "RFC 9112 §7.1.1: a chunk extension is a token list; a control byte is invalid"

CASES: list[Case] = [
    # --- Content-Length / Transfer-Encoding conflicts (RFC 9112 §6.1, §6.3)
    Case("cl-and-te", req(f"POST /s HTTP/1.1|{H}|Content-Length: 6|Transfer-Encoding: chunked",
                          b"0\r\n\r\nX"), "400 close"),
    Case("te-and-cl", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked|Content-Length: 6",
                          b"0\r\n\r\nX"), "400 close"),
    Case("cl-te-smuggle", req(f"POST /s HTTP/1.1|{H}|Content-Length: 4|Transfer-Encoding: chunked",
                              b"5c\r\n" + SMUGGLED + b"\r\n0\r\n\r\n"), "400 close"),
    Case("te-cl-smuggle", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked|Content-Length: 48",
                              b"0\r\n\r\n" + SMUGGLED), "400 close"),
    Case("cl-zero-and-te", req(f"POST /s HTTP/1.1|{H}|Content-Length: 0|Transfer-Encoding: chunked",
                               b"0\r\n\r\n"), "400 close"),
    Case("cl-duplicate-same", req(f"POST /s HTTP/1.1|{H}|Content-Length: 5|Content-Length: 5",
                                  b"hello"), "400 close"),
    Case("cl-duplicate-different", req(f"POST /s HTTP/1.1|{H}|Content-Length: 5|Content-Length: 6",
                                       b"hello!"), "400 close"),
    Case("cl-list-same", req(f"POST /s HTTP/1.1|{H}|Content-Length: 5, 5", b"hello"), "400 close"),
    Case("cl-list-different", req(f"POST /s HTTP/1.1|{H}|Content-Length: 5, 6", b"hello!"),
         "400 close"),
    Case("cl-negative", req(f"POST /s HTTP/1.1|{H}|Content-Length: -1", b"x"), "400 close"),
    Case("cl-plus-sign", req(f"POST /s HTTP/1.1|{H}|Content-Length: +5", b"hello"), "400 close"),
    Case("cl-hex", req(f"POST /s HTTP/1.1|{H}|Content-Length: 0x5", b"hello"), "400 close"),
    Case("cl-inner-space", req(f"POST /s HTTP/1.1|{H}|Content-Length: 1 0", b"helloworld"),
         "400 close"),
    Case("cl-overflow", req(f"POST /s HTTP/1.1|{H}|Content-Length: 99999999999999999999999",
                            b"x"), "400 close"),
    Case("cl-empty", req(f"POST /s HTTP/1.1|{H}|Content-Length: ", b""), "400 close"),
    Case("cl-leading-zeros", req(f"POST /s HTTP/1.1|{H}|Content-Length: 0005", b"hello"),
         "200@/s keep"),
    Case("cl-space-before-colon", req(f"POST /s HTTP/1.1|{H}|Content-Length : 5", b"hello"),
         "400 close"),
    Case("get-body-looks-like-request",
         req(f"GET /s HTTP/1.1|{H}|Content-Length: {len(SMUGGLED)}", SMUGGLED), "200@/s keep"),
    # --- Transfer-Encoding forms
    Case("te-gzip-only", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: gzip", b"hello"),
         "501 close"),
    Case("te-identity", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: identity", b"hello"),
         "501 close"),
    Case("te-chunked-then-gzip", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked, gzip",
                                     CHUNKED_OK), "400 close", envoy="501 close", why=TE_ORDER),
    Case("te-gzip-then-chunked", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: gzip, chunked",
                                     CHUNKED_OK), "501 close"),
    Case("te-chunked-twice", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked|"
                                 "Transfer-Encoding: chunked", CHUNKED_OK), "501 close"),
    Case("te-uppercase", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: CHUNKED", CHUNKED_OK),
         "200@/s keep"),
    Case("te-tab-before-value", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding:\tchunked",
                                    CHUNKED_OK), "200@/s keep"),
    Case("te-trailing-space", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked ",
                                  CHUNKED_OK), "200@/s keep"),
    Case("te-space-before-colon", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding : chunked",
                                      CHUNKED_OK), "400 close"),
    Case("te-vertical-tab", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding:\x0bchunked",
                                CHUNKED_OK), "400 close"),
    Case("te-xchunked", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: xchunked", CHUNKED_OK),
         "501 close"),
    Case("te-obs-fold", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding:| chunked", CHUNKED_OK),
         "400 close", envoy="200@/s keep", why=FOLD),
    Case("te-http10", req("POST /s HTTP/1.0|Transfer-Encoding: chunked", CHUNKED_OK),
         "400 close", envoy="200@/s close", why=HTTP10_TE),
    # --- Chunk syntax (RFC 9112 §7.1)
    Case("chunk-size-not-hex", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked",
                                   b"zz\r\nhello\r\n0\r\n\r\n"), "400 close"),
    Case("chunk-size-negative", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked",
                                    b"-5\r\nhello\r\n0\r\n\r\n"), "400 close"),
    Case("chunk-size-overflow", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked",
                                    b"10000000000000005\r\nhello\r\n0\r\n\r\n"), "400 close"),
    Case("chunk-size-0x", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked",
                              b"0x5\r\nhello\r\n0\r\n\r\n"), "400 close"),
    Case("chunk-size-leading-space", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked",
                                         b" 5\r\nhello\r\n0\r\n\r\n"), "400 close"),
    Case("chunk-size-trailing-space", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked",
                                          b"5 \r\nhello\r\n0\r\n\r\n"), "200@/s keep"),
    Case("chunk-data-too-long", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked",
                                    b"5\r\nhelloX\r\n0\r\n\r\n"), "400 close",
         envoy="200@/s keep", why=CHUNK),
    Case("chunk-data-bare-lf", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked",
                                   b"5\r\nhello\n0\r\n\r\n"), "400 close",
         envoy="200@/s keep", why=BARE_LF),
    Case("chunk-all-bare-lf", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked",
                                  b"5\nhello\n0\n\n"), "400 close"),
    Case("chunk-extension", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked",
                                b"5;name=value\r\nhello\r\n0\r\n\r\n"), "200@/s keep"),
    Case("chunk-extension-ctl", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked",
                                    b"5;\x01\r\nhello\r\n0\r\n\r\n"), "400 close",
         envoy="200@/s keep", why=CHUNK_EXT),
    Case("chunk-trailer", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked",
                              b"5\r\nhello\r\n0\r\nx-trailer: t\r\n\r\n"), "200@/s keep"),
    Case("chunk-trailer-no-colon", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked",
                                       b"5\r\nhello\r\n0\r\nnot a trailer\r\n\r\n"), "400 close"),
    Case("chunk-hides-request", req(f"POST /s HTTP/1.1|{H}|Transfer-Encoding: chunked",
                                    b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n"),
         "200@/s keep"),
    # --- Header field syntax (RFC 9110 §5.5, RFC 9112 §5)
    Case("obs-fold", req(f"GET /s HTTP/1.1|{H}|X-Folded: a| b"), "400 close",
         envoy="200@/s keep", why=FOLD),
    Case("header-space-in-name", req(f"GET /s HTTP/1.1|{H}|X Bad: v"), "400 close"),
    Case("header-paren-in-name", req(f"GET /s HTTP/1.1|{H}|X(bad): v"), "400 close"),
    Case("header-high-bit-in-name", req(f"GET /s HTTP/1.1|{H}|X-\xe9: v"), "400 close"),
    Case("header-no-colon", req(f"GET /s HTTP/1.1|{H}|NoColonHere"), "400 close"),
    Case("header-empty-name", req(f"GET /s HTTP/1.1|{H}|: v"), "400 close"),
    Case("header-nul-in-value", req(f"GET /s HTTP/1.1|{H}|X-Nul: a\x00b"), "400 close"),
    Case("header-cr-in-value", req(f"GET /s HTTP/1.1|{H}|X-Cr: a\rb"), "400 close",
         envoy="200@/s keep", why=CR_VALUE),
    Case("header-del-in-value", req(f"GET /s HTTP/1.1|{H}|X-Del: a\x7fb"), "400 close"),
    Case("header-obs-text-value", req(f"GET /s HTTP/1.1|{H}|X-Latin: caf\xe9"), "200@/s keep"),
    Case("header-trailing-tab", req(f"GET /s HTTP/1.1|{H}|X-Tab: v\t"), "200@/s keep"),
    Case("bare-lf-line-ends", b"GET /s HTTP/1.1\nHost: s.test\n\n", "400 close",
         envoy="200@/s keep", why=BARE_LF),
    Case("bare-cr-line-ends", b"GET /s HTTP/1.1\rHost: s.test\r\r", "400 close",
         envoy="hang", why=BARE_CR),
    Case("header-too-large", req(f"GET /s HTTP/1.1|{H}|X-Big: {BIG}"), "431 close"),
    Case("too-many-headers", req(f"GET /s HTTP/1.1|{H}|" + "|".join(
        f"X-H{i}: v" for i in range(120))), "431 close"),
    # --- Host (RFC 9112 §3.2)
    Case("host-missing", req("GET /s HTTP/1.1|X-A: b"), "400 close"),
    Case("host-duplicate", req(f"GET /s HTTP/1.1|{H}|Host: other.test"), "400 close",
         envoy="200@/s keep", why=HOST),
    Case("host-with-space", req("GET /s HTTP/1.1|Host: s test"), "400 close"),
    Case("host-bad-port", req("GET /s HTTP/1.1|Host: s.test:abc"), "400 close",
         envoy="200@/s keep", why=HOST),
    Case("absolute-form", req(f"GET http://s.test/abs HTTP/1.1|{H}"), "200@/abs keep"),
    # --- Request line (RFC 9112 §3)
    Case("method-lowercase", req(f"get /s HTTP/1.1|{H}"), "400 close"),
    Case("method-unknown", req(f"BREW /s HTTP/1.1|{H}"), "400 close"),
    Case("method-bad-char", req(f"G@T /s HTTP/1.1|{H}"), "400 close"),
    Case("method-nul", req(f"GE\x00T /s HTTP/1.1|{H}"), "400 close"),
    Case("head", req(f"HEAD /s HTTP/1.1|{H}"), "200 keep"),
    Case("connect-without-route", req("CONNECT s.test:443 HTTP/1.1|Host: s.test:443"),
         "404 close"),
    Case("options-asterisk", req(f"OPTIONS * HTTP/1.1|{H}"), "404 keep"),
    Case("request-line-double-space", req(f"GET  /s HTTP/1.1|{H}"), "400 close",
         envoy="200@/s keep", why=SPACES),
    Case("request-line-tab", req(f"GET\t/s HTTP/1.1|{H}"), "400 close",
         envoy="200@/s keep", why=SPACES),
    Case("target-with-space", req(f"GET /s x HTTP/1.1|{H}"), "400 close"),
    Case("target-ctl-byte", req(f"GET /s\x01 HTTP/1.1|{H}"), "400 close"),
    Case("target-fragment", req(f"GET /s#frag HTTP/1.1|{H}"), "400 close"),
    Case("target-no-slash", req(f"GET s HTTP/1.1|{H}"), "400 close"),
    Case("target-asterisk-get", req(f"GET * HTTP/1.1|{H}"), "400 close"),
    Case("version-lowercase", req(f"GET /s http/1.1|{H}"), "400 close"),
    Case("version-1.2", req(f"GET /s HTTP/1.2|{H}"), "200@/s keep",
         envoy="200@/s close", why=MINOR),
    Case("version-1.10", req(f"GET /s HTTP/1.10|{H}"), "400 close"),
    Case("version-2", req(f"GET /s HTTP/2.0|{H}"), "505 close",
         envoy="200@/s close", why=VERSION),
    Case("version-missing-minor", req(f"GET /s HTTP/1|{H}"), "400 close"),
    Case("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "400 close"),
    Case("http09", b"GET /s\r\n\r\n", "400 close", envoy="200@/s close", why=HTTP09),
    Case("leading-space", req(f" GET /s HTTP/1.1|{H}"), "400 close"),
    Case("leading-empty-line", b"\r\n" + req(f"GET /s HTTP/1.1|{H}"), "200@/s keep"),
    Case("request-line-too-long", req(f"GET /{'a' * (64 << 10)} HTTP/1.1|{H}"), "414 close",
         envoy="431 close", why=URI_TOO_LONG),
    # --- Upgrade (no upgrade_configs on this route)
    Case("upgrade-websocket-not-enabled", req(
        f"GET /s HTTP/1.1|{H}|Connection: Upgrade|Upgrade: websocket|"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==|Sec-WebSocket-Version: 13"), "403 close"),
    Case("upgrade-h2c-ignored", req(
        f"GET /s HTTP/1.1|{H}|Connection: Upgrade, HTTP2-Settings|Upgrade: h2c|"
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"), "200@/s keep"),
    # --- HTTP/1.0 (the listener sets accept_http_10)
    Case("http10-no-host", req("GET /s HTTP/1.0"), "200@/s close"),
    Case("http10-keep-alive", req("GET /s HTTP/1.0|Connection: keep-alive"), "200@/s keep"),
    Case("http10-body", req("POST /s HTTP/1.0|Content-Length: 5", b"hello"), "200@/s close"),
    # --- Pipelining and connection reuse (the second request in the same write)
    Case("pipeline-two-gets", req(f"GET /a HTTP/1.1|{H}") + req(f"GET /b HTTP/1.1|{H}"),
         "200@/a 200@/b keep"),
    Case("pipeline-post-then-get", req(f"POST /a HTTP/1.1|{H}|Content-Length: 5", b"hello")
         + req(f"GET /b HTTP/1.1|{H}"), "200@/a 200@/b keep"),
    Case("pipeline-chunked-then-get", req(f"POST /a HTTP/1.1|{H}|Transfer-Encoding: chunked",
                                          CHUNKED_OK) + req(f"GET /b HTTP/1.1|{H}"),
         "200@/a 200@/b keep"),
    Case("pipeline-head-then-get", req(f"HEAD /a HTTP/1.1|{H}") + req(f"GET /b HTTP/1.1|{H}"),
         "200 200@/b keep"),
    Case("pipeline-after-bad-request", req(f"GET /a HTTP/1.1|{H}|Bad Header: v") + SMUGGLED,
         "400 close"),
    Case("pipeline-cl-te-then-get", req(f"POST /a HTTP/1.1|{H}|Content-Length: 5|"
                                        "Transfer-Encoding: chunked", b"0\r\n\r\n") + SMUGGLED,
         "400 close"),
    Case("pipeline-close-then-get", req(f"GET /a HTTP/1.1|{H}|Connection: close") + SMUGGLED,
         "200@/a close"),
    Case("pipeline-local-reply-then-get", req(f"GET /nowhere HTTP/1.1|{H}")
         + req(f"GET /b HTTP/1.1|{H}"), "404 200@/b keep"),
    Case("expect-100-continue", req(f"POST /s HTTP/1.1|{H}|Expect: 100-continue|"
                                    "Content-Length: 5", b"hello"), "100 200@/s keep"),
    Case("connection-close", req(f"GET /s HTTP/1.1|{H}|Connection: close"), "200@/s close"),
    Case("body-then-eof", req(f"POST /s HTTP/1.1|{H}|Content-Length: 10", b"short"),
         "close", half_close=True),
]


def outcome(port: int, case: Case) -> str:
    """Runs one case on a fresh connection; returns its outcome string."""
    parts: list[str] = []
    # Only the first request of a case can be a HEAD; what follows is read as a GET's answer.
    method = case.payload.split(b" ", 1)[0].decode("latin-1")
    with Conn(port, timeout=CASE_TIMEOUT) as c:
        c.send(case.payload.replace(TAG, case.name.encode().ljust(len(TAG), b"_")))
        if case.half_close:
            try:
                c.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        probe_sent = False
        while True:
            try:
                r = c.read_response(method)
            except Closed:
                parts.append("close")
                break
            except Hang:
                parts.append("hang")
                break
            except ValueError as e:
                parts.append(f"garbage({e})")
                break
            method = "GET"
            echo = r.echo()
            if echo and echo["target"] == "/probe":
                parts.append("keep")
                break
            parts.extend(str(s) for s in r.interim)
            parts.append(f"{r.status}@{echo['target']}" if echo else str(r.status))
            if not probe_sent and not case.half_close:
                probe_sent = c.send(PROBE)
    return " ".join(parts)


def smuggled_targets(log_path: str) -> dict[str, list[str]]:
    """Per case name, the smuggled targets that reached the upstream (none, if all is well)."""
    out: dict[str, list[str]] = {}
    with open(log_path, "rb") as f:
        for line in f:
            target = json.loads(line)["target"]
            if target.startswith("/smuggled/"):
                out.setdefault(target.split("/")[2].rstrip("_"), []).append(target)
    return out


def run(port: int, proxy: str, log_path: str, record: bool) -> int:
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names), "duplicate case names"
    assert all(len(n) <= len(TAG) for n in names), "case names fit in TAG"
    with ThreadPoolExecutor(max_workers=16) as pool:
        got = dict(zip(names, pool.map(lambda c: outcome(port, c), CASES)))
    time.sleep(0.2)  # a smuggled request, if any, reaches the upstream log
    smuggled = smuggled_targets(log_path)
    failures = []
    for case in CASES:
        want = (case.envoy or case.expect) if proxy == "envoy" else case.expect
        leaked = smuggled.get(case.name, [])
        ok = got[case.name] == want and not leaked
        note = "" if ok else f"   <-- want {want!r}" + (f", SMUGGLED {leaked}" if leaked else "")
        print(f"{'ok  ' if ok else 'FAIL'} {case.name:32} {got[case.name]}{note}")
        if record and got[case.name] != case.expect:
            print(f"     (differs from expect {case.expect!r})")
        if not ok:
            failures.append(case.name)
    strays = sorted(set(smuggled) - set(names))
    if strays:
        print(f"FAIL smuggled requests of no known case reached the upstream: {strays}")
        failures.extend(strays)
    print(f"{len(CASES) - len(failures)}/{len(CASES)} cases as expected for {proxy}")
    if failures:
        print("failed: " + ", ".join(failures))
    return 1 if failures else 0


def table() -> str:
    """One row per case: what it sends (less the `Host: s.test` line most carry), what
    shardproxy must do, what Envoy 1.40 does, and why they differ."""
    rows = ["| case | sends | expected | Envoy 1.40 | why they differ |",
            "|---|---|---|---|---|"]
    for c in CASES:
        payload = c.payload.replace(b"Host: s.test\r\n", b"")  # on almost every case
        sent = payload[:90].decode("latin-1").encode("unicode_escape").decode("ascii")
        sent = sent.replace("|", "\\|").replace("`", "'") + ("…" if len(payload) > 90 else "")
        envoy = c.envoy or "same"
        why = c.why.replace("|", "\\|") if c.envoy else ""
        rows.append(f"| {c.name} | `{sent}` | {c.expect} | {envoy} | {why} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bootstrap")
    b.add_argument("--listen-port", type=int, required=True)
    b.add_argument("--admin-port", type=int, required=True)
    b.add_argument("--upstream", type=int, required=True)
    r = sub.add_parser("run")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--proxy", choices=["envoy", "shardproxy"], required=True)
    r.add_argument("--log", required=True, help="the upstream's request log")
    r.add_argument("--record", action="store_true", help="print outcomes that differ from expect")
    sub.add_parser("table", help="print the Markdown table of cases")
    args = p.parse_args()
    if args.cmd == "table":
        print(table(), end="")
        return 0
    if args.cmd == "bootstrap":
        print(json.dumps(bootstrap(args.listen_port, args.admin_port, args.upstream)))
        return 0
    return run(args.port, args.proxy, args.log, args.record)


if __name__ == "__main__":
    sys.exit(main())
