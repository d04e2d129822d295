#!/usr/bin/env python3
"""Test peer: HTTP/2 on the `h2` library (and `httpx`) — an h2c/HTTP/1.1 echo upstream, and clients.

    h2_peer.py serve [--silent]      # prints `READY <port>` once listening on 127.0.0.1
    h2_peer.py request --port N [--method M] [--path P] [--header k:v]... [--body TEXT]
                       [--trailer k:v]...
    h2_peer.py httpx --url URL [--method M] [--body TEXT] [--ca CERT]
    h2_peer.py drain --port N --admin N [--path P] [--header k:v]...
    h2_peer.py keepalive --port N --wait-s S [--silent]
    h2_peer.py malformed --port N

`serve` accepts both HTTP/2 with prior knowledge (h2c, told apart by the 24-byte preface) and
HTTP/1.1 on the same port, and answers each request with a JSON echo: `protocol` (HTTP/2.0 or
HTTP/1.1), method, path, authority, headers (as received, in order), body and its length,
request trailers. Every answer carries `x-upstream-protocol`. On HTTP/2 a request with
`x-want-trailers: 1` gets its answer followed by trailers `x-trailer-one: one` and
`x-trailer-body-len: <request body length>`.

`serve --silent` accepts connections and reads them but never answers (a hung upstream).

`request` is one h2c request (request trailers, if given, end the stream); `httpx` is one
request on httpx with http2=True; `drain` sends a request, has the admin port POST
/drain_listeners?graceful while it is in flight, then reads the connection until it closes.
`keepalive` holds an idle h2c connection open for up to `--wait-s` and counts the PINGs the
proxy sends; it answers them unless `--silent` (then it never writes after its preface, as
a dead peer). `malformed` starts a slow request (stream 1, `x-echo-delay-ms: 800`), then
sends stream 3 with a `content-length` that is not a number (malformed, RFC 9113 §8.1.1), and
reports how each stream ended and whether the connection closed. Each client prints one
JSON object of what it observed.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.request

import h2.config
import h2.connection
import h2.events
import h2.exceptions

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
IO_TIMEOUT = 30


def pairs(values: list[str]) -> list[tuple[str, str]]:
    out = []
    for v in values:
        k, _, val = v.partition(":")
        out.append((k.strip().lower(), val.strip()))
    return out


def send_all_data(conn, sock, stream_id: int, data: bytes, end_stream: bool) -> None:
    """Sends `data` within the frame size; the bodies here are smaller than any window."""
    size = conn.max_outbound_frame_size
    if not data:
        if end_stream:
            conn.end_stream(stream_id)
        return
    for i in range(0, len(data), size):
        last = i + size >= len(data)
        conn.send_data(stream_id, data[i:i + size], end_stream=end_stream and last)
        sock.sendall(conn.data_to_send())


# ---------------------------------------------------------------------------------------------
# The upstream


def serve_h2(sock: socket.socket, first: bytes) -> None:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    streams: dict[int, dict] = {}
    data = first
    while True:
        if data:
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    streams[ev.stream_id] = {"headers": list(ev.headers), "body": b"",
                                             "trailers": []}
                elif isinstance(ev, h2.events.DataReceived):
                    streams[ev.stream_id]["body"] += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    streams[ev.stream_id]["trailers"] = list(ev.headers)
                elif isinstance(ev, h2.events.StreamEnded):
                    answer_h2(conn, sock, ev.stream_id, streams.pop(ev.stream_id))
                elif isinstance(ev, h2.events.StreamReset):
                    streams.pop(ev.stream_id, None)
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    sock.sendall(conn.data_to_send())
                    return
            sock.sendall(conn.data_to_send())
        data = sock.recv(65536)
        if not data:
            return


def answer_h2(conn, sock, stream_id: int, req: dict) -> None:
    pseudo = {k: v for k, v in req["headers"] if k.startswith(":")}
    regular = [[k, v] for k, v in req["headers"] if not k.startswith(":")]
    echo = {
        "protocol": "HTTP/2.0", "method": pseudo.get(":method"), "path": pseudo.get(":path"),
        "authority": pseudo.get(":authority"), "scheme": pseudo.get(":scheme"),
        "headers": regular, "body_len": len(req["body"]),
        "body": req["body"].decode("utf-8", "replace"),
        "trailers": [[k, v] for k, v in req["trailers"]],
    }
    body = json.dumps(echo).encode()
    want_trailers = any(k == "x-want-trailers" for k, _ in regular)
    conn.send_headers(stream_id, [
        (":status", "200"), ("content-type", "application/json"),
        ("content-length", str(len(body))), ("x-upstream-protocol", "HTTP/2.0"),
    ])
    send_all_data(conn, sock, stream_id, body, end_stream=not want_trailers)
    if want_trailers:
        conn.send_headers(stream_id, [("x-trailer-one", "one"),
                                      ("x-trailer-body-len", str(len(req["body"])))],
                          end_stream=True)
    sock.sendall(conn.data_to_send())


def serve_h1(sock: socket.socket, first: bytes) -> None:
    buf = first
    while True:
        while b"\r\n\r\n" not in buf:
            more = sock.recv(65536)
            if not more:
                return
            buf += more
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append([k.strip().lower(), v.strip()])
        length = int(next((v for k, v in headers if k == "content-length"), "0"))
        while len(buf) < length:
            more = sock.recv(65536)
            if not more:
                return
            buf += more
        body, buf = buf[:length], buf[length:]
        authority = next((v for k, v in headers if k == "host"), None)
        echo = {"protocol": version, "method": method, "path": target, "authority": authority,
                "scheme": None, "headers": headers, "body_len": len(body),
                "body": body.decode("utf-8", "replace"), "trailers": []}
        out = json.dumps(echo).encode()
        sock.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(out)}\r\nx-upstream-protocol: {version}\r\n\r\n".encode()
            + out)


def serve_conn(sock: socket.socket) -> None:
    try:
        sock.settimeout(IO_TIMEOUT * 4)
        first = b""
        while len(first) < len(PREFACE) and PREFACE.startswith(first):
            more = sock.recv(65536)
            if not more:
                return
            first += more
        if first.startswith(PREFACE):
            serve_h2(sock, first)
        else:
            serve_h1(sock, first)
    except (OSError, ValueError, h2.exceptions.ProtocolError):
        pass
    finally:
        sock.close()


def swallow(sock: socket.socket) -> None:
    """A dead peer: reads whatever comes, never writes."""
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass
    finally:
        sock.close()


def serve_forever(handle) -> None:
    """Listens on 127.0.0.1, prints `READY <port>`, and runs `handle(sock)` on a thread of its
    own for each connection, until the test closes our stdin (it died or dropped us)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    print(f"READY {listener.getsockname()[1]}", flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    while True:
        s, _ = listener.accept()
        threading.Thread(target=handle, args=(s,), daemon=True).start()


def serve(args) -> None:
    serve_forever(swallow if args.silent else serve_conn)


# ---------------------------------------------------------------------------------------------
# Clients


def client_conn(port: int):
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def request(args) -> None:
    sock, conn = client_conn(args.port)
    body = (args.body or "").encode()
    trailers = pairs(args.trailer)
    headers = [(":method", args.method), (":scheme", "http"), (":path", args.path),
               (":authority", args.authority)] + pairs(args.header)
    end_headers = not body and not trailers
    conn.send_headers(1, headers, end_stream=end_headers)
    sock.sendall(conn.data_to_send())
    if not end_headers:
        send_all_data(conn, sock, 1, body, end_stream=not trailers)
    if trailers:
        conn.send_headers(1, trailers, end_stream=True)
    sock.sendall(conn.data_to_send())
    out = {"status": None, "headers": [], "body": "", "trailers": [], "reset": None}
    body_in = b""
    done = False
    while not done:
        data = sock.recv(65536)
        if not data:
            out["closed"] = True
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                out["headers"] = [[k, v] for k, v in ev.headers if not k.startswith(":")]
                out["status"] = int(dict(ev.headers)[":status"])
            elif isinstance(ev, h2.events.DataReceived):
                body_in += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived):
                out["trailers"] = [[k, v] for k, v in ev.headers]
            elif isinstance(ev, h2.events.StreamEnded):
                done = True
            elif isinstance(ev, h2.events.StreamReset):
                out["reset"] = int(ev.error_code)
                done = True
        sock.sendall(conn.data_to_send())
    out["body"] = body_in.decode("utf-8", "replace")
    conn.close_connection()
    sock.sendall(conn.data_to_send())
    sock.close()
    print(json.dumps(out))


def httpx_request(args) -> None:
    import httpx
    verify = ssl.create_default_context(cafile=args.ca) if args.ca else True
    with httpx.Client(http2=True, http1=not args.h2_only, verify=verify, timeout=IO_TIMEOUT) as c:
        r = c.request(args.method, args.url, content=(args.body or "").encode() or None)
        print(json.dumps({"http_version": r.http_version, "status": r.status_code,
                          "headers": [[k, v] for k, v in r.headers.items()],
                          "body": r.text}))


class FrameSplitter:
    """Cuts received bytes into whole HTTP/2 frames: ("goaway", {last_stream_id, error_code})
    for a GOAWAY, ("frame", bytes) for any other."""

    def __init__(self):
        self.buf = b""

    def feed(self, data: bytes):
        self.buf += data
        out = []
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                break
            frame, self.buf = self.buf[:9 + length], self.buf[9 + length:]
            if frame[3] == 0x7:
                payload = frame[9:]
                out.append(("goaway", {
                    "last_stream_id": int.from_bytes(payload[:4], "big") & 0x7FFFFFFF,
                    "error_code": int.from_bytes(payload[4:8], "big")}))
            else:
                out.append(("frame", frame))
        return out


def drain(args) -> None:
    """One slow request in flight on an h2c connection while the admin drains the listeners."""
    sock, conn = client_conn(args.port)
    headers = [(":method", "GET"), (":scheme", "http"), (":path", args.path),
               (":authority", "drain.test")] + pairs(args.header)
    conn.send_headers(1, headers, end_stream=True)
    sock.sendall(conn.data_to_send())
    started = time.monotonic()
    out = {"goaway": None, "status": None, "body_len": 0, "ended": False, "reset": None,
           "closed": False, "order": [], "goaways": [], "drain_status": None}

    def post_drain():
        time.sleep(args.drain_after_ms / 1000)
        req = urllib.request.Request(
            f"http://127.0.0.1:{args.admin}/drain_listeners?graceful", method="POST")
        with urllib.request.urlopen(req, timeout=IO_TIMEOUT) as r:
            out["drain_status"] = r.status

    t = threading.Thread(target=post_drain)
    t.start()
    sock.settimeout(args.wait_s)
    frames = FrameSplitter()
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                out["closed"] = True
                break
            # python-h2 closes its connection state on a GOAWAY and then refuses the frames
            # of the streams still in flight: GOAWAYs are taken out here and recorded.
            for kind, frame in frames.feed(data):
                if kind == "goaway":
                    out["goaway"] = frame
                    out["goaways"].append(frame)
                    out["order"].append("goaway")
                    continue
                for ev in conn.receive_data(frame):
                    if isinstance(ev, h2.events.ResponseReceived):
                        out["status"] = int(dict(ev.headers)[":status"])
                        out["order"].append("response")
                    elif isinstance(ev, h2.events.DataReceived):
                        out["body_len"] += len(ev.data)
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        out["ended"] = True
                        out["order"].append("end")
                    elif isinstance(ev, h2.events.StreamReset):
                        out["reset"] = int(ev.error_code)
            try:
                sock.sendall(conn.data_to_send())
            except OSError:
                pass
    except socket.timeout:
        out["timed_out"] = True
    except OSError as e:
        out["error"] = str(e)
    out["elapsed_ms"] = int((time.monotonic() - started) * 1000)
    t.join()
    # Several GOAWAYs in a row (a first with the highest stream id, then the last
    # processed) count once in the order log; `goaway` is the last one.
    order = []
    for o in out["order"]:
        if not order or order[-1] != o:
            order.append(o)
    out["order"] = order
    print(json.dumps(out))


def keepalive(args) -> None:
    """An idle h2c connection: the PINGs the proxy sends, and whether (and when) it closed."""
    sock, conn = client_conn(args.port)
    started = time.monotonic()
    out = {"pings": 0, "closed": False, "goaway": None, "closed_after_ms": None}
    sock.settimeout(0.2)
    while time.monotonic() - started < args.wait_s:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError as e:
            out["error"] = str(e)
            data = b""
        if not data:
            out["closed"] = True
            out["closed_after_ms"] = int((time.monotonic() - started) * 1000)
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.PingReceived):
                out["pings"] += 1
            elif isinstance(ev, h2.events.ConnectionTerminated):
                out["goaway"] = int(ev.error_code)
        pending = conn.data_to_send()
        if pending and not args.silent:
            sock.sendall(pending)
    print(json.dumps(out))


def malformed(args) -> None:
    """A request in flight, then a malformed one beside it on the same connection."""
    sock = socket.create_connection(("127.0.0.1", args.port), timeout=IO_TIMEOUT)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
        normalize_outbound_headers=False))
    conn.initiate_connection()
    base = [(":scheme", "http"), (":authority", "malformed.test"), (":method", "GET")]
    conn.send_headers(1, base + [(":path", "/slow"), ("x-echo-delay-ms", "800")],
                      end_stream=True)
    conn.send_headers(3, base + [(":path", "/bad"), ("content-length", "1x")], end_stream=True)
    sock.sendall(conn.data_to_send())
    out = {"streams": {}, "closed": False, "goaway": None}
    sock.settimeout(5)
    try:
        while len(out["streams"]) < 2:
            data = sock.recv(65536)
            if not data:
                out["closed"] = True
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    out["streams"][str(ev.stream_id)] = int(dict(ev.headers)[":status"])
                elif isinstance(ev, h2.events.StreamReset):
                    out["streams"][str(ev.stream_id)] = f"reset {int(ev.error_code)}"
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    out["goaway"] = int(ev.error_code)
            sock.sendall(conn.data_to_send())
    except (OSError, h2.exceptions.ProtocolError) as e:
        out["error"] = type(e).__name__
    print(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve").add_argument("--silent", action="store_true")
    r = sub.add_parser("request")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--method", default="GET")
    r.add_argument("--path", default="/")
    r.add_argument("--authority", default="h2.test")
    r.add_argument("--header", action="append", default=[])
    r.add_argument("--trailer", action="append", default=[])
    r.add_argument("--body")
    x = sub.add_parser("httpx")
    x.add_argument("--url", required=True)
    x.add_argument("--method", default="GET")
    x.add_argument("--body")
    x.add_argument("--ca")
    x.add_argument("--h2-only", action="store_true")
    d = sub.add_parser("drain")
    d.add_argument("--port", type=int, required=True)
    d.add_argument("--admin", type=int, required=True)
    d.add_argument("--path", default="/")
    d.add_argument("--header", action="append", default=[])
    d.add_argument("--drain-after-ms", type=int, default=300)
    d.add_argument("--wait-s", type=float, default=15)
    k = sub.add_parser("keepalive")
    k.add_argument("--port", type=int, required=True)
    k.add_argument("--wait-s", type=float, required=True)
    k.add_argument("--silent", action="store_true")
    m = sub.add_parser("malformed")
    m.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    {"malformed": malformed, "serve": serve, "request": request, "httpx": httpx_request, "drain": drain,
     "keepalive": keepalive}[args.cmd](args)


if __name__ == "__main__":
    main()
