#!/usr/bin/env python3
"""Test peer: the far end of TCP-over-HTTP tunnels (what tcp_proxy's `tunneling_config` opens).

    tunnel_terminator.py --record FILE --cert CERT --key KEY    # prints `READY <port>`

One port takes every kind of connection: TLS (first byte 0x16; ALPN `h2` or `http/1.1`),
HTTP/2 with prior knowledge (h2c, the connection preface), or HTTP/1.1. Each tunnel request
(a CONNECT, or any other method: a POST tunnel) is appended to FILE as one JSON line: the
protocol, method, `:authority` (HTTP/1.1: the request target), `:path`, `:scheme`, the
`host` field and every other field in order. An authority that starts with `refuse` is
answered 403 (and the stream ended, or the connection closed), one that starts with `silent`
is never answered; any other gets 200, then the
tunnel echoes every byte back. When the client ends its side (END_STREAM, or a FIN), the
terminator sends `bye` and ends its own side too, so both half-closes are visible. A POST over
HTTP/1.1 carries the tunnel as chunked bodies both ways (the request's last chunk is the
client's end; `bye` and the response's last chunk answer it).
"""
from __future__ import annotations

import argparse
import json
import socket
import ssl
import threading

import h2.config
import h2.connection
import h2.events

from h2_peer import serve_forever

IO_TIMEOUT = 10
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
LOCK = threading.Lock()


def record(path: str, entry: dict) -> None:
    with LOCK, open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")


def refused(authority: str) -> bool:
    return authority.startswith("refuse")


def serve_h2(sock, first: bytes, path: str, protocol: str) -> None:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    data = first
    while True:
        if data:
            events = conn.receive_data(data)
            for event in events:
                on_h2_event(conn, event, path, protocol)
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
        data = sock.recv(65536)
        if not data:
            return


def on_h2_event(conn, event, path: str, protocol: str) -> None:
    if isinstance(event, h2.events.RequestReceived):
        pseudo = {k: v for k, v in event.headers if k.startswith(":")}
        fields = [[k, v] for k, v in event.headers if not k.startswith(":")]
        authority = pseudo.get(":authority", "")
        record(path, {
            "protocol": protocol,
            "method": pseudo.get(":method"),
            "authority": authority,
            "path": pseudo.get(":path"),
            "scheme": pseudo.get(":scheme"),
            "fields": fields,
        })
        if authority.startswith("silent"):
            return  # never answered
        status = "403" if refused(authority) else "200"
        conn.send_headers(event.stream_id, [(":status", status)], end_stream=status != "200")
    elif isinstance(event, h2.events.DataReceived):
        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        if event.data:
            conn.send_data(event.stream_id, event.data)
    elif isinstance(event, h2.events.StreamEnded):
        # The client's half-close (after any data on the same frame was echoed).
        conn.send_data(event.stream_id, b"bye", end_stream=True)


def serve_h1(sock, first: bytes, path: str, protocol: str) -> None:
    data = first
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            return
        data += more
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    fields = [[k.strip().lower(), v.strip()] for k, v in
              (line.split(":", 1) for line in lines[1:])]
    authority = target if method == "CONNECT" else dict(fields).get("host", "")
    record(path, {
        "protocol": protocol,
        "method": method,
        "authority": target if method == "CONNECT" else None,
        "path": None if method == "CONNECT" else target,
        "scheme": None,
        "fields": fields,
    })
    if refused(authority):
        sock.sendall(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
        return
    if authority.startswith("silent"):
        while sock.recv(65536):
            pass
        return
    if method != "CONNECT":
        serve_h1_post(sock, rest)
        return
    sock.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + rest)
    while True:
        data = sock.recv(65536)
        if not data:
            sock.sendall(b"bye")
            sock.shutdown(socket.SHUT_WR)
            return
        sock.sendall(data)


def serve_h1_post(sock, data: bytes) -> None:
    """A POST tunnel over HTTP/1.1: the request body is chunked; each chunk is echoed as a
    chunk of the response, and the last one answered with `bye` and the response's end."""
    sock.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")

    def need(n: int) -> bool:
        nonlocal data
        while len(data) < n:
            more = sock.recv(65536)
            if not more:
                return False
            data += more
        return True

    while True:
        while b"\r\n" not in data:
            if not need(len(data) + 1):
                return
        line, data = data.split(b"\r\n", 1)
        size = int(line.split(b";")[0], 16)
        if not need(size + 2):
            return
        chunk, data = data[:size], data[size + 2:]
        if size == 0:
            sock.sendall(b"3\r\nbye\r\n0\r\n\r\n")
            return
        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))


def handler(args):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["h2", "http/1.1"])

    def handle(sock) -> None:
        sock.settimeout(IO_TIMEOUT)
        try:
            first = sock.recv(1, socket.MSG_PEEK)
            tls = first == b"\x16"
            if tls:
                sock = context.wrap_socket(sock, server_side=True)
            first = b""
            while len(first) < len(PREFACE) and PREFACE.startswith(first):
                more = sock.recv(len(PREFACE) - len(first))
                if not more:
                    return
                first += more
            h2c = first == PREFACE
            if tls:
                h2c = sock.selected_alpn_protocol() == "h2"
                protocol = "h2" if h2c else "http/1.1 tls"
            else:
                protocol = "h2c" if h2c else "http/1.1"
            if h2c:
                serve_h2(sock, first, args.record, protocol)
            else:
                serve_h1(sock, first, args.record, protocol)
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            sock.close()

    return handle


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--record", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    serve_forever(handler(p.parse_args()))


if __name__ == "__main__":
    main()
