#!/usr/bin/env python3
"""Test peer: an HTTPS upstream that answers with a JSON description of the request and the TLS
connection it arrived on.

Started by the TLS end-to-end tests (tests/common/tls.rs) behind Envoy and shardproxy, so what a
proxy sent upstream is visible in the response body: the request's headers (x-forwarded-proto,
x-forwarded-client-cert, ...), the SNI the proxy sent, the negotiated version, cipher and ALPN,
and the proxy's client certificate (its subject and SANs) when one was presented.

    tls_upstream.py --name NAME --cert CHAIN.pem --key KEY.pem [--ca CA.pem]
                    [--require-client-cert] [--alpn h2,http/1.1] [--min-version TLSv1_3]

prints `LISTEN <name> <port>` (127.0.0.1, kernel-chosen port), then `READY`, and serves until its
standard input closes. HTTP/1.1 with keep-alive; HTTP/2 (with the `h2` package) when ALPN picks
`h2`. With --ca the client's certificate is requested and verified against CA (optional unless
--require-client-cert). The JSON body has the fields of tests/peers/upstream.py's echo
(`upstream`, `method`, `target`, `version`, `headers` as [name, value] pairs) plus
`os.hostname` (the name, as the echo server of Envoy's TLS sandboxes reports it) and `tls`:
{sni, version, cipher, alpn, peer_subject, peer_sans}. Over HTTP/1.1 a request header
`x-echo-header: name: value` adds that response header (repeatable).
"""
from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
import threading

VERSIONS = {
    "TLSv1_2": ssl.TLSVersion.TLSv1_2,
    "TLSv1_3": ssl.TLSVersion.TLSv1_3,
}


def subject_of(cert: dict) -> dict:
    return {k: v for rdn in cert.get("subject", ()) for (k, v) in rdn}


def tls_info(sock: ssl.SSLSocket) -> dict:
    peer = sock.getpeercert() or {}
    return {
        "sni": getattr(sock, "sni", None),
        "version": sock.version(),
        "cipher": (sock.cipher() or [None])[0],
        "alpn": sock.selected_alpn_protocol(),
        "peer_subject": subject_of(peer) if peer else None,
        "peer_sans": [list(s) for s in peer.get("subjectAltName", ())],
    }


def describe(name, method, target, version, headers, body: bytes, tls: dict) -> bytes:
    echo = {
        "upstream": name,
        "os": {"hostname": name},
        "method": method,
        "target": target,
        "version": version,
        "headers": [list(h) for h in headers],
        "body_len": len(body),
        "tls": tls,
    }
    return json.dumps(echo).encode() + b"\n"


def serve_http1(sock: ssl.SSLSocket, name: str, tls: dict) -> None:
    f = sock.makefile("rb")
    while True:
        line = f.readline(1 << 16)
        if not line:
            return
        parts = line.rstrip(b"\r\n").decode("latin-1").split(" ")
        if len(parts) != 3:
            return
        method, target, version = parts
        headers = []
        while True:
            h = f.readline(1 << 16).rstrip(b"\r\n")
            if not h:
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers.append((k, v.strip()))
        lower = {k.lower(): v for k, v in headers}
        body = f.read(int(lower.get("content-length", "0") or 0))
        payload = describe(name, method, target, version, headers, body, tls)
        close = "close" in lower.get("connection", "").lower()
        extra = "".join(
            f"{v}\r\n" for k, v in headers if k.lower() == "x-echo-header"
        )
        head = (
            "HTTP/1.1 200 OK\r\nserver: tls-upstream\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n" + extra
            + ("connection: close\r\n" if close else "") + "\r\n"
        )
        sock.sendall(head.encode() + payload)
        if close:
            return


def serve_h2(sock: ssl.SSLSocket, name: str, tls: dict) -> None:
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    streams: dict[int, tuple[list, bytearray]] = {}
    while True:
        data = sock.recv(65536)
        if not data:
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                headers = [(k.decode() if isinstance(k, bytes) else k,
                            v.decode() if isinstance(v, bytes) else v) for k, v in event.headers]
                streams[event.stream_id] = (headers, bytearray())
            elif isinstance(event, h2.events.DataReceived):
                streams[event.stream_id][1].extend(event.data)
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                headers, body = streams.pop(event.stream_id)
                pseudo = dict(h for h in headers if h[0].startswith(":"))
                regular = [h for h in headers if not h[0].startswith(":")]
                payload = describe(name, pseudo.get(":method"), pseudo.get(":path"), "HTTP/2",
                                   regular, bytes(body), tls)
                conn.send_headers(event.stream_id, [
                    (":status", "200"), ("server", "tls-upstream"),
                    ("content-type", "application/json"),
                    ("content-length", str(len(payload))),
                ])
                conn.send_data(event.stream_id, payload, end_stream=True)
            elif isinstance(event, h2.events.ConnectionTerminated):
                sock.sendall(conn.data_to_send())
                return
        sock.sendall(conn.data_to_send())


def serve(raw: socket.socket, ctx: ssl.SSLContext, name: str) -> None:
    try:
        sock = ctx.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError) as e:
        print(f"handshake failed: {e}", file=sys.stderr, flush=True)
        raw.close()
        return
    try:
        tls = tls_info(sock)
        if tls["alpn"] == "h2":
            serve_h2(sock, name, tls)
        else:
            serve_http1(sock, name, tls)
    except (ssl.SSLError, OSError, ValueError, KeyError):
        pass
    finally:
        try:
            sock.close()
        except OSError:
            pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default="tls-upstream")
    p.add_argument("--cert", required=True, help="certificate chain (PEM)")
    p.add_argument("--key", required=True)
    p.add_argument("--ca", help="request client certificates and verify them with this CA")
    p.add_argument("--require-client-cert", action="store_true")
    p.add_argument("--alpn", help="comma-separated ALPN protocols to offer")
    p.add_argument("--min-version", choices=sorted(VERSIONS))
    args = p.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    if args.ca:
        ctx.load_verify_locations(args.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if args.require_client_cert else ssl.CERT_OPTIONAL
    if args.alpn:
        ctx.set_alpn_protocols(args.alpn.split(","))
    if args.min_version:
        ctx.minimum_version = VERSIONS[args.min_version]

    def on_sni(sock, server_name, _ctx):
        sock.sni = server_name

    ctx.sni_callback = on_sni

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    print(f"LISTEN {args.name} {listener.getsockname()[1]}", flush=True)

    def accept_loop():
        while True:
            raw, _ = listener.accept()
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.settimeout(60)
            threading.Thread(target=serve, args=(raw, ctx, args.name), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    print("READY", flush=True)
    try:
        sys.stdin.read()  # exit when the test closes our stdin or dies
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
