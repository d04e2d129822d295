#!/usr/bin/env python3
"""Test peer: a TLS client (Python's ssl) that connects, optionally sends one HTTP/1.1 request,
and prints one JSON object describing what happened.

    tls_client.py --port P [--host 127.0.0.1] [--sni NAME] [--ca CA.pem] [--cert C --key K]
                  [--alpn h2,http/1.1] [--min-version TLSv1_2] [--max-version TLSv1_3]
                  [--ciphers OPENSSL-LIST] [--path /x] [--header 'name: value']... [--no-request]

Without --ca the server's certificate is not verified (its subject and SANs are still reported).
The JSON: `ok` (handshake done and, unless --no-request, a response read), `stage` where it
failed (`connect`, `handshake`, `request`) and `error`, then the negotiated `version`, `cipher`,
`alpn`, the server's `peer_subject` (attribute -> value) and `peer_sans` ([type, value]), and
`response` {status, headers ([name, value]), body}. Always exits 0 when it could print that.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import tempfile

VERSIONS = {
    "TLSv1_2": ssl.TLSVersion.TLSv1_2,
    "TLSv1_3": ssl.TLSVersion.TLSv1_3,
}


def decode_cert(der: bytes) -> dict:
    """The subject and SANs of a DER certificate, verified or not."""
    pem = ssl.DER_cert_to_PEM_cert(der)
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as f:
        f.write(pem)
    try:
        return ssl._ssl._test_decode_cert(f.name)  # the only stdlib parser for an unverified cert
    finally:
        os.unlink(f.name)


def read_response(sock: ssl.SSLSocket) -> dict:
    f = sock.makefile("rb")
    status_line = f.readline(1 << 16)
    if not status_line:
        raise ConnectionError("connection closed before a response")
    parts = status_line.decode("latin-1").split(" ", 2)
    headers = []
    while True:
        line = f.readline(1 << 16).rstrip(b"\r\n")
        if not line:
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers.append([k.lower(), v.strip()])
    lower = dict(headers)
    if "content-length" in lower:
        body = f.read(int(lower["content-length"]))
    else:
        body = f.read()
    return {"status": int(parts[1]), "headers": headers, "body": body.decode("utf-8", "replace")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sni")
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--alpn")
    p.add_argument("--min-version", choices=sorted(VERSIONS))
    p.add_argument("--max-version", choices=sorted(VERSIONS))
    p.add_argument("--ciphers")
    p.add_argument("--path", default="/")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--no-request", action="store_true")
    p.add_argument("--timeout", type=float, default=20)
    args = p.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if args.ca:
        ctx.load_verify_locations(args.ca)
        ctx.check_hostname = bool(args.sni)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    if args.alpn:
        ctx.set_alpn_protocols(args.alpn.split(","))
    if args.min_version:
        ctx.minimum_version = VERSIONS[args.min_version]
    if args.max_version:
        ctx.maximum_version = VERSIONS[args.max_version]
    if args.ciphers:
        ctx.set_ciphers(args.ciphers)

    out: dict = {"ok": False}
    stage = "connect"
    try:
        raw = socket.create_connection((args.host, args.port), timeout=args.timeout)
        stage = "handshake"
        sock = ctx.wrap_socket(raw, server_hostname=args.sni)
        out.update({
            "version": sock.version(),
            "cipher": sock.cipher()[0],
            "alpn": sock.selected_alpn_protocol(),
        })
        peer = decode_cert(sock.getpeercert(binary_form=True))
        out["peer_subject"] = {k: v for rdn in peer.get("subject", ()) for (k, v) in rdn}
        out["peer_sans"] = [list(s) for s in peer.get("subjectAltName", ())]
        if not args.no_request:
            stage = "request"
            host = args.sni or args.host
            lines = [f"GET {args.path} HTTP/1.1", f"host: {host}", "connection: close"]
            lines += args.header
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            out["response"] = read_response(sock)
        out["ok"] = True
        sock.close()
    except (OSError, ssl.SSLError, ConnectionError, ValueError, IndexError) as e:
        out["stage"] = stage
        out["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
