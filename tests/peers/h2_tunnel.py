#!/usr/bin/env python3
"""Test peer: tunnels over HTTP/2 (on the `h2` library) and a tiny HTTP/1.1 WebSocket server.

    h2_tunnel.py connect --port N [--streams K] [--authority A] [--tls-ca CERT]
    h2_tunnel.py hbone --port N --authority A [--header NAME=VALUE]... --send TEXT
                       [--half-close] [--tls-ca CERT --tls-cert CERT --tls-key KEY]
    h2_tunnel.py websocket --port N [--path P] [--message TEXT]
    h2_tunnel.py ws-serve [--status N]      # prints `READY <port>` once listening

`connect` opens one h2c connection (or h2 over TLS with `--tls-ca`, ALPN `h2`) and sends K
CONNECT requests (`:method CONNECT`, `:authority A`) on K streams at once. On each stream it
waits for the response head, sends `tunnel-<i>` as DATA, reads it back (the far end is a TCP
echo), then ends its side of the stream (END_STREAM, a half-close) and reads until the proxy
ends the stream too, and half a second more for a RST_STREAM after an answer. It prints one JSON object: per stream the status, the bytes read back,
whether the proxy ended the stream and any reset code.

`hbone` sends one CONNECT as Istio's HBONE does (extra request fields with `--header`, e.g.
`baggage`), mTLS with `--tls-cert`/`--tls-key`; on a 200 it sends TEXT (backslash escapes
such as \r\n decoded) through the tunnel, half-closes with `--half-close`, and reads until the
proxy ends the stream. It prints the status and everything read back.

`websocket` sends one RFC 8441 extended CONNECT (`:protocol websocket`, needing
SETTINGS_ENABLE_CONNECT_PROTOCOL from the server, which it reports), then one masked text
frame, and reads one frame back. It prints the status, the response's `sec-websocket-*` and
`upgrade`/`connection` fields, the message read back, the request fields the upstream saw (the
`ws-serve` upstream sends them as its first text frame), and any reset code.

`ws-serve` is an HTTP/1.1 WebSocket server: it answers an upgrade with 101 and
`sec-websocket-accept`, sends the request's head as a JSON text frame, then echoes every
text frame. With `--status N` it answers every request with that status (and a short body)
instead.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

from h2_peer import serve_forever

IO_TIMEOUT = 10
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def h2_client(port: int, ca: str | None = None, cert: str | None = None,
              key: str | None = None):
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    if ca:
        context = ssl.create_default_context(cafile=ca)
        if cert:
            context.load_cert_chain(cert, key)
        context.set_alpn_protocols(["h2"])
        sock = context.wrap_socket(sock, server_hostname="localhost")
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def pump(sock, conn, on_event, until, deadline: float) -> None:
    """Reads events into `on_event` until `until()` holds, the peer closes, or the deadline."""
    while not until() and time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (socket.timeout, OSError):
            return
        if not data:
            return
        for event in conn.receive_data(data):
            on_event(event)
        out = conn.data_to_send()
        if out:
            sock.sendall(out)


# ---------------------------------------------------------------------------------------------
# CONNECT


def connect(args) -> None:
    sock, conn = h2_client(args.port, args.tls_ca)
    streams: dict[int, dict] = {}
    for i in range(args.streams):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "CONNECT"), (":authority", args.authority)])
        streams[sid] = {"index": i, "status": None, "echo": b"", "ended": False,
                        "reset": None, "sent_end": False}
    sock.sendall(conn.data_to_send())
    deadline = time.monotonic() + IO_TIMEOUT

    def on_event(event) -> None:
        s = streams.get(getattr(event, "stream_id", None))
        if isinstance(event, h2.events.ResponseReceived) and s:
            s["status"] = int(dict(event.headers)[":status"])
            if s["status"] == 200:
                conn.send_data(event.stream_id, f"tunnel-{s['index']}".encode())
        elif isinstance(event, h2.events.DataReceived) and s:
            s["echo"] += event.data
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if s["echo"] == f"tunnel-{s['index']}".encode() and not s["sent_end"]:
                s["sent_end"] = True
                conn.end_stream(event.stream_id)
        elif isinstance(event, h2.events.StreamEnded) and s:
            s["ended"] = True
        elif isinstance(event, h2.events.StreamReset) and s:
            s["reset"] = int(event.error_code)
            s["ended"] = True

    def done() -> bool:
        return all(s["ended"] for s in streams.values())

    pump(sock, conn, on_event, done, deadline)
    # A RST_STREAM may follow an answer that ended the stream (a CONNECT that failed).
    sock.settimeout(0.5)
    pump(sock, conn, on_event, lambda: False, time.monotonic() + 0.5)
    sock.close()
    print(json.dumps({"streams": [
        {"status": s["status"], "echo": s["echo"].decode(errors="replace"),
         "half_closed_first": s["sent_end"], "ended": s["ended"], "reset": s["reset"]}
        for s in streams.values()]}))


def hbone(args) -> None:
    sock, conn = h2_client(args.port, args.tls_ca, args.tls_cert, args.tls_key)
    sid = conn.get_next_available_stream_id()
    extra = [tuple(h.split("=", 1)) for h in args.header]
    conn.send_headers(sid, [(":method", "CONNECT"), (":authority", args.authority)] + extra)
    sock.sendall(conn.data_to_send())
    out = {"status": None, "received": b"", "ended": False, "reset": None}

    def on_event(event) -> None:
        if getattr(event, "stream_id", None) != sid:
            return
        if isinstance(event, h2.events.ResponseReceived):
            out["status"] = int(dict(event.headers)[":status"])
            if out["status"] == 200:
                payload = args.send.encode().decode("unicode_escape").encode("latin-1")
                conn.send_data(sid, payload, end_stream=args.half_close)
        elif isinstance(event, h2.events.DataReceived):
            out["received"] += event.data
            conn.acknowledge_received_data(event.flow_controlled_length, sid)
        elif isinstance(event, h2.events.StreamEnded):
            out["ended"] = True
        elif isinstance(event, h2.events.StreamReset):
            out["reset"] = int(event.error_code)
            out["ended"] = True

    pump(sock, conn, on_event, lambda: out["ended"], time.monotonic() + IO_TIMEOUT)
    sock.close()
    out["received"] = out["received"].decode(errors="replace")
    print(json.dumps(out))


# ---------------------------------------------------------------------------------------------
# WebSocket frames (RFC 6455): text frames only, small payloads


def ws_frame(payload: bytes, masked: bool) -> bytes:
    head = bytes([0x81])
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    else:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def ws_parse(buf: bytes):
    """One frame off `buf`: (opcode, payload, rest), or None while incomplete."""
    if len(buf) < 2:
        return None
    opcode, n, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
    masked = buf[1] & 0x80
    if n == 126:
        if len(buf) < 4:
            return None
        n, at = struct.unpack("!H", buf[2:4])[0], 4
    key = b""
    if masked:
        key, at = buf[at:at + 4], at + 4
    if len(buf) < at + n:
        return None
    payload = buf[at:at + n]
    if masked:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return opcode, payload, buf[at + n:]


def websocket(args) -> None:
    sock, conn = h2_client(args.port)
    outcome = {"enable_connect_protocol": None, "status": None, "headers": {},
               "upstream_saw": None, "message": None, "reset": None}
    deadline = time.monotonic() + IO_TIMEOUT

    def settings_seen(event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            setting = event.changed_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
            outcome["enable_connect_protocol"] = bool(setting and setting.new_value)

    pump(sock, conn, settings_seen, lambda: outcome["enable_connect_protocol"] is not None,
         deadline)
    if not outcome["enable_connect_protocol"]:
        # h2 refuses to send `:protocol` unless the server allowed it.
        sock.close()
        print(json.dumps(outcome))
        return
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [
        (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
        (":path", args.path), (":authority", "ws.test"),
        ("sec-websocket-version", "13"), ("origin", "http://ws.test"),
    ])
    sock.sendall(conn.data_to_send())
    frames = b""
    texts: list[str] = []

    def on_event(event) -> None:
        nonlocal frames
        if getattr(event, "stream_id", None) != sid:
            return
        if isinstance(event, h2.events.ResponseReceived):
            headers = dict(event.headers)
            outcome["status"] = int(headers[":status"])
            outcome["headers"] = {k: v for k, v in headers.items()
                                  if k.startswith("sec-websocket") or k in ("upgrade",
                                                                            "connection")}
            if outcome["status"] == 200:
                conn.send_data(sid, ws_frame(args.message.encode(), masked=True))
        elif isinstance(event, h2.events.DataReceived):
            conn.acknowledge_received_data(event.flow_controlled_length, sid)
            frames += event.data
            while (frame := ws_parse(frames)) is not None:
                _, payload, frames = frame
                texts.append(payload.decode(errors="replace"))
        elif isinstance(event, h2.events.StreamReset):
            outcome["reset"] = int(event.error_code)
        elif isinstance(event, h2.events.StreamEnded):
            outcome["ended"] = True

    def done() -> bool:
        return (len(texts) >= 2 or outcome["reset"] is not None or "ended" in outcome
                or (outcome["status"] not in (None, 200)))

    pump(sock, conn, on_event, done, deadline)
    sock.close()
    if texts:
        outcome["upstream_saw"] = json.loads(texts[0])
    if len(texts) > 1:
        outcome["message"] = texts[1]
    outcome.pop("ended", None)
    print(json.dumps(outcome))


# ---------------------------------------------------------------------------------------------
# The WebSocket upstream


def read_head(sock) -> tuple[str, dict[str, str], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("closed before the head")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return lines[0], fields, rest


def ws_session(sock, status: int | None) -> None:
    sock.settimeout(IO_TIMEOUT)
    try:
        request_line, fields, rest = read_head(sock)
        if status is not None:
            body = b"not a websocket"
            sock.sendall(f"HTTP/1.1 {status} Nope\r\ncontent-length: {len(body)}\r\n"
                         f"x-upstream: ws\r\n\r\n".encode() + body)
            return
        key = fields.get("sec-websocket-key", "").encode()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                      f"connection: upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n").encode())
        saw = {"request_line": request_line,
               "fields": {k: v for k, v in fields.items()
                          if k.startswith("sec-websocket") or k in ("upgrade", "connection")}}
        sock.sendall(ws_frame(json.dumps(saw).encode(), masked=False))
        buf = rest
        while True:
            frame = ws_parse(buf)
            if frame is None:
                data = sock.recv(4096)
                if not data:
                    return
                buf += data
                continue
            opcode, payload, buf = frame
            if opcode == 0x8:
                return
            sock.sendall(ws_frame(payload, masked=False))
    except OSError:
        pass
    finally:
        sock.close()


def ws_serve(args) -> None:
    serve_forever(lambda sock: ws_session(sock, args.status))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("connect")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--streams", type=int, default=1)
    c.add_argument("--authority", default="echo.test:443")
    c.add_argument("--tls-ca")
    b = sub.add_parser("hbone")
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--authority", required=True)
    b.add_argument("--header", action="append", default=[])
    b.add_argument("--send", required=True)
    b.add_argument("--half-close", action="store_true")
    b.add_argument("--tls-ca")
    b.add_argument("--tls-cert")
    b.add_argument("--tls-key")
    w = sub.add_parser("websocket")
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--path", default="/ws")
    w.add_argument("--message", default="hello over h2")
    s = sub.add_parser("ws-serve")
    s.add_argument("--status", type=int)
    args = p.parse_args()
    commands = {"connect": connect, "hbone": hbone, "websocket": websocket, "ws-serve": ws_serve}
    commands[args.cmd](args)


if __name__ == "__main__":
    main()
