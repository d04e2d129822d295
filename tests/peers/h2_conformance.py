#!/usr/bin/env python3
"""Test peer: an HTTP/2 frame-level conformance suite (RFC 9113) for a proxy's downstream side.

Each case is a small function that opens its own connection(s) to the proxy, sends exact frame
bytes (well-formed or deliberately broken: frames are built here by hand, header blocks are
HPACK literals built by hand, responses are decoded with the `hpack` package h2 depends on,
and the "is the proxy still serving?" probe is a normal client made with the `h2` library),
and checks the proxy's reaction against what RFC 9113 requires, expressed as frames or a close:

    GOAWAY(PROTOCOL_ERROR)                 a connection error with that code
    RST_STREAM(X) or GOAWAY(X)             a stream error (RFC 9113 §5.4: an endpoint may always
                                           treat a stream error as a connection error)
    malformed                              §8.1.1: RST_STREAM(PROTOCOL_ERROR), GOAWAY(PROTOCOL_ERROR)
                                           or a 4xx response; never forwarded (no 2xx/3xx/5xx)
    response 200                           the request is served
    ignored                                the connection stays usable (a PING is answered)

The proxy under test routes `/` (--path) to an upstream answering a small body and `/big`
(--big-path) to one answering a large body (64 MiB with tests/h2_conformance.rs). The cases
about the proxy's receive windows need a second listener (--stall-port) routing to an upstream
that never accepts a connection, so the proxy cannot pass request bodies on and must stop
granting window (tests/h2_conformance.rs gives it 64 KiB stream windows and 32 KiB buffers).

A case that expects a connection error (GOAWAY) also accepts a TCP close without GOAWAY, as
RFC 9113 §5.4.1 only says SHOULD for the GOAWAY; such a pass is marked lenient ("strict":
false in the JSON), so a harness can require the GOAWAY.

    h2_conformance.py --host 127.0.0.1 --port N [--stall-port N] [--tls --sni X --ca F]
                      [--path /] [--proxy-pid PID] [--case NAME ...] [--json] [--list]

prints `PASS|FAIL name: expected ..., got ...` per case (and, with --json, one JSON object
{case: {"ok": bool, "strict": bool, "got": str}} on stdout instead of those lines), and exits 1
when a case failed. Every case has a hard time bound (3 s; 10 s for the few that move megabytes or flood),
and the whole run is bounded by --total-timeout.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
FRAME_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING",
               "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"]
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

ERRORS = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
          "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL",
          "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY",
          "HTTP_1_1_REQUIRED"]
(NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED,
 FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM,
 INADEQUATE_SECURITY, HTTP_1_1_REQUIRED) = range(14)

HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, \
    MAX_HEADER_LIST_SIZE = range(1, 7)
MAX_WINDOW = 2**31 - 1

CASE_TIMEOUT = 3.0  # hard bound per case
LONG_TIMEOUT = 10.0  # for cases that move megabytes or flood
REACT = 2.0  # how long a case waits for a reaction that should come at once


def err_name(code: int) -> str:
    return ERRORS[code] if 0 <= code < len(ERRORS) else f"0x{code:x}"


# ---------------------------------------------------------------------------------------------
# Frames and header blocks, built by hand

def frame(ftype: int, flags: int, sid: int, payload: bytes = b"", length: int | None = None) -> bytes:
    """One frame; `length` overrides the length field (for frames that lie about it)."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def settings(*pairs: tuple[int, int], ack: bool = False) -> bytes:
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def ping(payload: bytes = b"12345678", ack: bool = False, sid: int = 0, flags: int = 0) -> bytes:
    return frame(PING, flags | (ACK if ack else 0), sid, payload)


def window_update(sid: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", increment))


def rst_stream(sid: int, code: int = CANCEL) -> bytes:
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def goaway(last: int = 0, code: int = NO_ERROR, sid: int = 0) -> bytes:
    return frame(GOAWAY, 0, sid, struct.pack(">II", last, code))


def priority(sid: int, depends_on: int = 0, weight: int = 15, exclusive: bool = False) -> bytes:
    dep = depends_on | (0x80000000 if exclusive else 0)
    return frame(PRIORITY, 0, sid, struct.pack(">IB", dep, weight))


def data(sid: int, body: bytes = b"", end: bool = True, pad: int | None = None,
         flags: int = 0) -> bytes:
    if pad is not None:
        return frame(DATA, flags | PADDED | (END_STREAM if end else 0), sid,
                     bytes([pad]) + body + b"\0" * pad)
    return frame(DATA, flags | (END_STREAM if end else 0), sid, body)


def hpint(value: int, prefix: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) with a `prefix`-bit prefix, OR-ed into `first`."""
    top = (1 << prefix) - 1
    if value < top:
        return bytes([first | value])
    out = [first | top]
    value -= top
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def lit(name, value, index: bool = False) -> bytes:
    """A literal field with a literal name, no Huffman: never indexed unless `index`."""
    n = name.encode("latin-1") if isinstance(name, str) else name
    v = value.encode("latin-1") if isinstance(value, str) else value
    return (b"\x40" if index else b"\x00") + hpint(len(n), 7) + n + hpint(len(v), 7) + v


def block(fields) -> bytes:
    return b"".join(lit(k, v) for k, v in fields)


def headers(sid: int, fields, end_stream: bool = True, end_headers: bool = True,
            flags: int = 0, raw: bytes | None = None, pad: int | None = None,
            prio: tuple[int, int] | None = None) -> bytes:
    """A HEADERS frame: `fields` as literals (or the `raw` block), optional padding/priority."""
    payload = block(fields) if raw is None else raw
    f = flags | (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    if prio is not None:
        f |= PRIORITY_FLAG
        payload = struct.pack(">IB", prio[0], prio[1]) + payload
    if pad is not None:
        f |= PADDED
        payload = bytes([pad]) + payload + b"\0" * pad
    return frame(HEADERS, f, sid, payload)


def continuation(sid: int, raw: bytes, end_headers: bool = True) -> bytes:
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, sid, raw)


# ---------------------------------------------------------------------------------------------
# One client connection, reading the server's frames

class Closed(Exception):
    pass


class Stream:
    def __init__(self):
        self.status: int | None = None
        self.interim: list[int] = []
        self.headers: list[tuple[str, str]] = []
        self.trailers: list[tuple[str, str]] | None = None
        self.data = 0
        self.body = bytearray()
        self.ended = False
        self.rst: int | None = None
        self.data_frames = 0
        self.max_data_frame = 0


class Conn:
    """A raw HTTP/2 client connection: sends bytes, parses and records what the server sends."""

    def __init__(self, ctx: "Ctx", preface: bool = True, client_settings=(), auto_ack=True,
                 keep_body=65536, port: int | None = None):
        self.ctx = ctx
        self.sock = ctx.connect(port)
        self.rbuf = bytearray()
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 20
        self.auto_ack = auto_ack
        self.keep_body = keep_body
        self.streams: dict[int, Stream] = {}
        self.frames: list[tuple[int, int, int, int]] = []  # (type, flags, sid, length)
        self.server_settings: list[dict[int, int]] = []
        self.settings_acks = 0
        self.ping_acks: list[bytes] = []
        self.pings: list[bytes] = []
        self.goaway: tuple[int, int, bytes] | None = None
        self.closed: str | None = None
        self.send_error: str | None = None
        self.conn_granted = 0  # WINDOW_UPDATE increments received, connection
        self.stream_granted: dict[int, int] = {}  # ... and per stream
        self.pending_block: tuple[int, int, bytearray] | None = None  # (sid, flags, bytes)
        self.protocol_violation: str | None = None
        if preface:
            self.send(PREFACE + settings(*client_settings))

    # -- sending

    def send(self, *chunks: bytes) -> bool:
        """Sends everything; False (and send_error set) when the server closed or stalled us."""
        buf = b"".join(chunks)
        try:
            self.sock.settimeout(max(0.05, self.ctx.remaining()))
            self.sock.sendall(buf)
            return True
        except socket.timeout:
            self.send_error = "send blocked"
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError) as e:
            self.send_error = type(e).__name__
        return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- receiving

    def stream(self, sid: int) -> Stream:
        return self.streams.setdefault(sid, Stream())

    def _recv(self, timeout: float) -> bool:
        """Reads once and handles whole frames; False on timeout. Raises Closed."""
        if self.closed:
            raise Closed(self.closed)
        t = min(timeout, self.ctx.remaining())
        if t <= 0:
            return False
        self.sock.settimeout(t)
        try:
            chunk = self.sock.recv(1 << 18)
        except (socket.timeout, ssl.SSLWantReadError):
            return False
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError) as e:
            self.closed = "reset" if isinstance(e, ConnectionResetError) else type(e).__name__
            raise Closed(self.closed) from None
        if not chunk:
            self.closed = "EOF"
            raise Closed(self.closed)
        self.rbuf += chunk
        if not self.frames and self.rbuf.startswith(b"HTTP/"):
            line = bytes(self.rbuf).split(b"\r\n", 1)[0].decode("latin-1")
            self.protocol_violation = f"server answered in HTTP/1: {line!r}"
            self.rbuf.clear()
            return True
        buf, at = self.rbuf, 0
        while len(buf) - at >= 9:
            n = int.from_bytes(buf[at:at + 3], "big")
            if len(buf) - at < 9 + n:
                break
            ftype, flags = buf[at + 3], buf[at + 4]
            sid = int.from_bytes(buf[at + 5:at + 9], "big") & 0x7FFFFFFF
            payload = bytes(buf[at + 9:at + 9 + n])
            at += 9 + n
            self._handle(ftype, flags, sid, payload)
        del buf[:at]
        return True

    def poll(self) -> None:
        """Handles whatever the server has sent already, without waiting."""
        try:
            while self._recv(0.001):
                pass
        except Closed:
            pass

    def _handle(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        self.frames.append((ftype, flags, sid, len(payload)))
        if self.pending_block is not None and ftype != CONTINUATION:
            self.protocol_violation = "server interrupted a header block"
        if ftype == SETTINGS:
            if flags & ACK:
                self.settings_acks += 1
            else:
                self.server_settings.append({
                    struct.unpack(">H", payload[i:i + 2])[0]: struct.unpack(">I", payload[i + 2:i + 6])[0]
                    for i in range(0, len(payload) - 5, 6)})
                if self.auto_ack:
                    self.send(settings(ack=True))
        elif ftype == PING:
            if flags & ACK:
                self.ping_acks.append(payload)
            else:
                self.pings.append(payload)
                self.send(ping(payload, ack=True))
        elif ftype == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self.goaway = (last & 0x7FFFFFFF, code, payload[8:])
        elif ftype == RST_STREAM:
            self.stream(sid).rst = struct.unpack(">I", payload[:4])[0]
        elif ftype == WINDOW_UPDATE:
            inc = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            if sid == 0:
                self.conn_granted += inc
            else:
                self.stream_granted[sid] = self.stream_granted.get(sid, 0) + inc
        elif ftype == DATA:
            s = self.stream(sid)
            body = payload
            if flags & PADDED:
                body = payload[1:len(payload) - payload[0]]
            s.data += len(body)
            s.data_frames += 1
            s.max_data_frame = max(s.max_data_frame, len(payload))
            if len(s.body) < self.keep_body:
                s.body += body[: self.keep_body - len(s.body)]
            if flags & END_STREAM:
                s.ended = True
        elif ftype in (HEADERS, PUSH_PROMISE):
            if ftype == PUSH_PROMISE:
                self.protocol_violation = "server sent PUSH_PROMISE although ENABLE_PUSH=0"
            body = payload
            if flags & PADDED:
                body = body[1:len(body) - body[0]]
            if ftype == HEADERS and flags & PRIORITY_FLAG:
                body = body[5:]
            self.pending_block = (sid, flags, bytearray(body))
            if flags & END_HEADERS:
                self._finish_block()
        elif ftype == CONTINUATION and self.pending_block is not None:
            self.pending_block[2].extend(payload)
            if flags & END_HEADERS:
                self._finish_block()

    def _finish_block(self) -> None:
        sid, flags, raw = self.pending_block
        self.pending_block = None
        try:
            fields = [(k.decode("latin-1") if isinstance(k, bytes) else k,
                       v.decode("latin-1") if isinstance(v, bytes) else v)
                      for k, v in self.decoder.decode(bytes(raw), raw=True)]
        except Exception as e:  # noqa: BLE001 -- any HPACK failure is the server's fault
            self.protocol_violation = f"undecodable response header block: {e}"
            return
        s = self.stream(sid)
        status = dict(fields).get(":status")
        if status is None:
            s.trailers = fields
        elif int(status) < 200:
            s.interim.append(int(status))
        else:
            s.status = int(status)
            s.headers = fields
        if flags & END_STREAM:
            s.ended = True

    def wait(self, done, timeout: float = REACT) -> bool:
        """Reads until `done()` holds (True), or until timeout, a close, or the case deadline."""
        end = time.monotonic() + timeout
        while not done():
            left = end - time.monotonic()
            if left <= 0 or self.ctx.remaining() <= 0:
                return False
            try:
                self._recv(left)
            except Closed:
                return done()
        return True

    def handshake(self) -> bool:
        """Waits for the server's SETTINGS (answered with an ACK by _handle)."""
        return self.wait(lambda: bool(self.server_settings) or self.goaway is not None)

    def ended(self) -> bool:
        return self.goaway is not None or self.closed is not None

    def react(self, sid: int | None = None, timeout: float = REACT) -> None:
        """Waits for a decisive reaction: GOAWAY, close, or stream `sid` reset or ended."""
        def done():
            if self.ended():
                return True
            if sid is None:
                return any(s.rst is not None for s in self.streams.values())
            s = self.streams.get(sid)
            return s is not None and (s.rst is not None or s.ended)
        self.wait(done, timeout)

    def ping_ok(self, payload: bytes = b"probe-ok", timeout: float = REACT) -> bool:
        """Sends a PING and waits for its ACK (False on GOAWAY, close or timeout)."""
        if self.ended() or not self.send(ping(payload)):
            return False
        self.wait(lambda: payload in self.ping_acks or self.ended(), timeout)
        return payload in self.ping_acks

    def describe(self, sid: int | None = None, waited: float = REACT) -> str:
        parts = []
        sids = [sid] if sid is not None else sorted(self.streams)
        for i in sids:
            s = self.streams.get(i)
            if s is None:
                continue
            if s.status is not None:
                parts.append(f"stream {i}: response {s.status}" + ("" if s.ended else " (unfinished)"))
            if s.rst is not None:
                parts.append(f"stream {i}: RST_STREAM({err_name(s.rst)})")
        if self.goaway is not None:
            last, code, debug = self.goaway
            d = debug[:60].decode("latin-1", "replace")
            parts.append(f"GOAWAY({err_name(code)}, last={last}" + (f", {d!r})" if d else ")"))
        if self.closed:
            parts.append(f"closed ({self.closed})")
        if self.protocol_violation:
            parts.append(f"server violation: {self.protocol_violation}")
        return "; ".join(parts) if parts else f"no reaction within {waited:g}s"


# ---------------------------------------------------------------------------------------------
# Outcome checks: each returns (verdict, got). The verdict is True (the expected outcome),
# LENIENT (allowed by the RFC, but not the preferred form: a TCP close without the GOAWAY that
# §5.4.1 says an endpoint SHOULD send first) or False.

LENIENT = "lenient"


def verdict_and(v, cond: bool):
    return v if cond else False


def closed_without_goaway(k: "Conn") -> bool:
    return k.goaway is None and k.closed is not None

def expect_goaway(k: Conn, *codes: int, sid: int | None = None, close_ok: bool = False):
    """A connection error with one of `codes` (or, with close_ok, a close without GOAWAY)."""
    k.react(sid=-1)  # only GOAWAY or close ends the wait
    got = k.describe(sid)
    if k.goaway is not None:
        return k.goaway[1] in codes, got
    if k.closed is not None:
        return (True if close_ok else LENIENT), got
    return False, got


def expect_stream_error(k: Conn, sid: int, code: int):
    """RST_STREAM(code) on sid, or GOAWAY(code) (§5.4: a stream error may end the connection)."""
    k.react(sid)
    s = k.streams.get(sid)
    ok = (s is not None and s.rst == code) or (k.goaway is not None and k.goaway[1] == code)
    if not ok and (s is None or s.rst is None) and closed_without_goaway(k):
        ok = LENIENT
    if s is not None and s.status is not None and 200 <= s.status < 400:
        ok = False
    return ok, k.describe(sid)


def expect_malformed(k: Conn, sid: int):
    """§8.1.1: a stream error PROTOCOL_ERROR (or connection error), optionally after a 4xx
    response; the request must not be forwarded, so no 2xx/3xx/5xx."""
    k.react(sid)
    s = k.streams.get(sid)
    got = k.describe(sid)
    if s is not None and s.status is not None:
        return 400 <= s.status < 500, got
    ok = (s is not None and s.rst == PROTOCOL_ERROR) or \
        (k.goaway is not None and k.goaway[1] == PROTOCOL_ERROR)
    if not ok and (s is None or s.rst is None) and closed_without_goaway(k):
        ok = LENIENT
    return ok, got


def expect_response(k: Conn, sid: int, status: int = 200, timeout: float = REACT):
    k.react(sid, timeout)
    s = k.streams.get(sid)
    ok = s is not None and s.status == status and s.ended and s.rst is None \
        and not k.protocol_violation
    return ok, k.describe(sid)


def expect_ignored(k: Conn):
    """The frame is ignored: a PING sent after it is answered; no GOAWAY, no reset stream."""
    answered = k.ping_ok()
    resets = [i for i, s in k.streams.items() if s.rst is not None]
    got = "PING answered" if answered else "PING not answered"
    extra = k.describe()
    if not extra.startswith("no reaction"):
        got += "; " + extra
    return answered and not resets and k.goaway is None, got


def both(*results):
    verdicts = [v for v, _ in results]
    v = False if not all(verdicts) else (LENIENT if LENIENT in verdicts else True)
    return v, "; ".join(g for _, g in results)


# ---------------------------------------------------------------------------------------------
# The context of a case

class Ctx:
    def __init__(self, opts, timeout: float):
        self.opts = opts
        self.deadline = time.monotonic() + timeout
        self.socks: list[socket.socket] = []
        self.lock = threading.Lock()
        self.aborted = False

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def connect(self, port: int | None = None) -> socket.socket:
        if self.aborted:
            raise Closed("case aborted")
        o = self.opts
        s = socket.create_connection((o.host, port or o.port), timeout=max(0.1, min(2.0, self.remaining())))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if o.tls:
            c = ssl.create_default_context(cafile=o.ca) if o.ca else ssl._create_unverified_context()
            c.set_alpn_protocols(["h2"])
            s = c.wrap_socket(s, server_hostname=o.sni or o.host)
            if s.selected_alpn_protocol() != "h2":
                raise Closed(f"ALPN chose {s.selected_alpn_protocol()!r}, not h2")
        with self.lock:
            self.socks.append(s)
        return s

    def conn(self, client_settings=(), port: int | None = None, **kw) -> Conn:
        """A connection after a clean handshake (preface, SETTINGS both ways)."""
        k = Conn(self, client_settings=client_settings, port=port, **kw)
        k.handshake()
        return k

    def raw(self) -> Conn:
        return Conn(self, preface=False)

    def abort(self) -> None:
        self.aborted = True
        with self.lock:
            for s in self.socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass

    def req(self, path: str | None = None, method: str = "GET", extra=()) -> list:
        o = self.opts
        return [(":method", method), (":scheme", "https" if o.tls else "http"),
                (":authority", o.authority), (":path", path or o.path)] + list(extra)

    def delayed(self, ms: int = 1500) -> list:
        """A GET the upstream answers only after `ms`: its stream stays half-closed (remote)."""
        return self.req(extra=[("x-echo-delay-ms", str(ms))])

    def post(self, extra=()) -> list:
        return self.req(method="POST", extra=extra)

    def fresh_get(self, path: str | None = None, timeout: float = REACT) -> tuple[int | None, str]:
        """A well-behaved h2 client (the h2 library) on a new connection: (status, note)."""
        try:
            sock = self.connect()
        except (OSError, Closed) as e:
            return None, f"fresh connection failed: {e}"
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        c.initiate_connection()
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, self.req(path), end_stream=True)
        end = time.monotonic() + min(timeout, max(0.1, self.remaining()))
        status = None
        try:
            sock.sendall(c.data_to_send())
            while time.monotonic() < end:
                sock.settimeout(max(0.01, end - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    return status, "fresh connection closed"
                for ev in c.receive_data(chunk):
                    if isinstance(ev, h2.events.ResponseReceived):
                        status = int(dict(ev.headers)[":status"])
                    elif isinstance(ev, h2.events.DataReceived):
                        c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        return status, f"fresh connection: response {status}"
                    elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                        return None, f"fresh connection: {type(ev).__name__}"
                sock.sendall(c.data_to_send())
        except (OSError, h2.exceptions.ProtocolError) as e:
            return None, f"fresh connection: {type(e).__name__} {e}"
        finally:
            sock.close()
        return status, "fresh connection: no complete response in time"

    def still_serving(self, path: str | None = None):
        status, note = self.fresh_get(path)
        return status == 200, note


# ---------------------------------------------------------------------------------------------
# The cases

CASES: list[dict] = []


def case(name: str, section: str, sends: str, expects: str, timeout: float = CASE_TIMEOUT,
         exclusive: bool = False):
    """Registers a case: `sends` and `expects` describe it for the report and the docs."""
    def register(fn):
        CASES.append(dict(name=name, section=section, sends=sends, expects=expects, fn=fn,
                          timeout=timeout, exclusive=exclusive))
        return fn
    return register


def get_on(c: Ctx, k: Conn, sid: int = 1):
    k.send(headers(sid, c.req()))
    return expect_response(k, sid)


# -- §3.4 connection preface

@case("preface_get", "3.4, 8.1", "preface, SETTINGS, GET /", "response 200")
def _(c):
    return get_on(c, c.conn())


@case("preface_server_settings_first", "3.4", "preface, SETTINGS",
      "the server's first frame is SETTINGS (not ACK), then it ACKs ours")
def _(c):
    k = c.conn()
    k.wait(lambda: k.settings_acks > 0 or k.ended())
    first = k.frames[0] if k.frames else None
    ok = first is not None and first[0] == SETTINGS and not first[1] & ACK and k.settings_acks >= 1
    got = f"first frame {FRAME_NAMES[first[0]] if first and first[0] < 10 else first}" \
          f" flags={first[1] if first else None}, {k.settings_acks} SETTINGS ACK"
    return ok, got


@case("preface_bad_magic", "3.4", "'PRI * HTTP/2.0\\r\\n\\r\\nXX\\r\\n\\r\\n', SETTINGS",
      "GOAWAY(PROTOCOL_ERROR) or close without GOAWAY; no response")
def _(c):
    k = c.raw()
    k.send(PREFACE.replace(b"SM", b"XX") + settings())
    return expect_goaway(k, PROTOCOL_ERROR, close_ok=True)


@case("preface_missing_settings", "3.4", "preface, then HEADERS (no SETTINGS)",
      "GOAWAY(PROTOCOL_ERROR) or close without GOAWAY")
def _(c):
    k = c.raw()
    k.send(PREFACE + headers(1, c.req()))
    ok, got = expect_goaway(k, PROTOCOL_ERROR, close_ok=True)
    return verdict_and(ok, k.streams.get(1, Stream()).status is None), got


@case("preface_ping_instead_of_settings", "3.4", "preface, then PING (no SETTINGS)",
      "GOAWAY(PROTOCOL_ERROR) or close without GOAWAY")
def _(c):
    k = c.raw()
    k.send(PREFACE + ping())
    return expect_goaway(k, PROTOCOL_ERROR, close_ok=True)


def trickle(c: Ctx, first: int):
    """Sends the preface's first `first` bytes, pauses 0.1 s, then the rest and SETTINGS one
    byte per write (1 ms apart); then GET /."""
    k = c.raw()
    k.send(PREFACE[:first])
    time.sleep(0.1)
    for b in PREFACE[first:] + settings():
        k.send(bytes([b]))
        time.sleep(0.001)
    k.handshake()
    return get_on(c, k)


@case("preface_trickled", "3.4", "preface's first 16 bytes, a pause, then the rest of it and "
      "SETTINGS one byte per write; GET /", "response 200")
def _(c):
    return trickle(c, 16)


@case("preface_split_early", "3.3, 3.4", "'PR', a pause, then the rest of the preface and SETTINGS "
      "one byte per write; GET /", "response 200 (TCP may split the preface anywhere)")
def _(c):
    return trickle(c, 2)


# -- §6.5 SETTINGS

@case("settings_ack", "6.5.3", "SETTINGS (MAX_CONCURRENT_STREAMS=100)", "SETTINGS with ACK")
def _(c):
    k = c.conn(client_settings=[(MAX_CONCURRENT_STREAMS, 100)])
    ok = k.wait(lambda: k.settings_acks > 0 or k.ended())
    return ok and not k.ended(), f"{k.settings_acks} SETTINGS ACK" + ("; " + k.describe() if k.ended() else "")


@case("settings_server_values_valid", "6.5.2", "preface, SETTINGS",
      "server SETTINGS in range: ENABLE_PUSH absent or 0, MAX_FRAME_SIZE 2^14..2^24-1, "
      "INITIAL_WINDOW_SIZE <= 2^31-1")
def _(c):
    k = c.conn()
    if not k.server_settings:
        return False, k.describe()
    s = k.server_settings[0]
    bad = []
    if s.get(ENABLE_PUSH, 0) != 0:
        bad.append(f"ENABLE_PUSH={s[ENABLE_PUSH]}")
    if not 16384 <= s.get(MAX_FRAME_SIZE, 16384) <= 2**24 - 1:
        bad.append(f"MAX_FRAME_SIZE={s[MAX_FRAME_SIZE]}")
    if s.get(INITIAL_WINDOW_SIZE, 0) > MAX_WINDOW:
        bad.append(f"INITIAL_WINDOW_SIZE={s[INITIAL_WINDOW_SIZE]}")
    return not bad, ("bad: " + ", ".join(bad)) if bad else f"settings {s}"


@case("settings_ack_with_payload", "6.5", "SETTINGS with ACK flag and a 6-byte payload",
      "GOAWAY(FRAME_SIZE_ERROR)")
def _(c):
    k = c.conn()
    k.send(frame(SETTINGS, ACK, 0, struct.pack(">HI", MAX_CONCURRENT_STREAMS, 10)))
    return expect_goaway(k, FRAME_SIZE_ERROR)


@case("settings_bad_length", "6.5", "SETTINGS with a 3-byte payload (not a multiple of 6)",
      "GOAWAY(FRAME_SIZE_ERROR)")
def _(c):
    k = c.conn()
    k.send(frame(SETTINGS, 0, 0, b"\x00\x03\x00"))
    return expect_goaway(k, FRAME_SIZE_ERROR)


@case("settings_on_stream", "6.5", "SETTINGS on stream 1", "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(frame(SETTINGS, 0, 1, b""))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("settings_enable_push_2", "6.5.2", "SETTINGS ENABLE_PUSH=2", "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(settings((ENABLE_PUSH, 2)))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("settings_initial_window_too_large", "6.5.2", "SETTINGS INITIAL_WINDOW_SIZE=2^31",
      "GOAWAY(FLOW_CONTROL_ERROR)")
def _(c):
    k = c.conn()
    k.send(settings((INITIAL_WINDOW_SIZE, 2**31)))
    return expect_goaway(k, FLOW_CONTROL_ERROR)


@case("settings_max_frame_size_too_small", "6.5.2", "SETTINGS MAX_FRAME_SIZE=16383",
      "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(settings((MAX_FRAME_SIZE, 16383)))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("settings_max_frame_size_too_large", "6.5.2", "SETTINGS MAX_FRAME_SIZE=2^24",
      "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(settings((MAX_FRAME_SIZE, 2**24)))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("settings_unknown_id_ignored", "6.5.2", "SETTINGS with unknown identifier 0xff=1",
      "SETTINGS ACK; ignored (PING answered)")
def _(c):
    k = c.conn()
    k.send(settings((0xFF, 1)))
    k.wait(lambda: k.settings_acks >= 2 or k.ended())
    ok, got = expect_ignored(k)
    return ok and k.settings_acks >= 2, f"{k.settings_acks} SETTINGS ACKs; {got}"


@case("settings_extreme_valid_values", "6.5.2",
      "SETTINGS HEADER_TABLE_SIZE=0, ENABLE_PUSH=0, MAX_FRAME_SIZE=2^24-1, "
      "INITIAL_WINDOW_SIZE=2^31-1, MAX_HEADER_LIST_SIZE=2^32-1; GET /",
      "response 200 (decodable with a 0-byte HPACK table)")
def _(c):
    k = c.conn(client_settings=[(HEADER_TABLE_SIZE, 0), (ENABLE_PUSH, 0), (MAX_FRAME_SIZE, 2**24 - 1),
                                (INITIAL_WINDOW_SIZE, MAX_WINDOW), (MAX_HEADER_LIST_SIZE, 2**32 - 1)])
    k.decoder.header_table_size = 0
    k.decoder.max_allowed_table_size = 0
    return get_on(c, k)


@case("settings_initial_window_change_applies", "6.9.2",
      "SETTINGS INITIAL_WINDOW_SIZE=0; GET /; then SETTINGS INITIAL_WINDOW_SIZE=200",
      "response HEADERS but no DATA until the change, then exactly 200 DATA bytes")
def _(c):
    k = c.conn(client_settings=[(INITIAL_WINDOW_SIZE, 0)])
    k.send(headers(1, c.req()))
    k.wait(lambda: k.stream(1).status is not None or k.ended())
    k.wait(lambda: k.stream(1).data > 0 or k.ended(), 0.4)
    before = k.stream(1).data
    k.send(settings((INITIAL_WINDOW_SIZE, 200)))
    k.wait(lambda: k.stream(1).data >= 200 or k.ended())
    k.wait(lambda: k.stream(1).data > 200 or k.ended(), 0.3)
    s = k.stream(1)
    return (s.status == 200 and before == 0 and s.data == 200,
            f"status {s.status}, {before} DATA bytes before the change, {s.data} after; {k.describe()}")


@case("settings_window_reduction_negative", "6.9.2",
      "GET /big; after 65535 DATA bytes SETTINGS INITIAL_WINDOW_SIZE=16384 "
      "(window -49151), WINDOW_UPDATE(stream, 49251)",
      "exactly 100 more DATA bytes (the negative window is honoured)", timeout=LONG_TIMEOUT)
def _(c):
    k = c.conn()
    k.send(headers(1, c.req(c.opts.big_path)), window_update(0, 2**30))
    k.wait(lambda: k.stream(1).data >= 65535 or k.ended(), 4)
    first = k.stream(1).data
    k.send(settings((INITIAL_WINDOW_SIZE, 16384)))
    k.wait(lambda: k.settings_acks >= 2 or k.ended())
    k.send(window_update(1, 49151 + 100))
    k.wait(lambda: k.stream(1).data >= first + 100 or k.ended())
    k.wait(lambda: k.stream(1).data > first + 100 or k.ended(), 0.4)
    s = k.stream(1)
    return (first == 65535 and s.data == first + 100,
            f"{first} bytes in the initial window, {s.data - first} after; {k.describe(1)}")


# -- §4 frame format and sizes

@case("frame_data_too_large", "4.2", "HEADERS (POST) then DATA of 16385 bytes (MAX_FRAME_SIZE 16384)",
      "RST_STREAM(FRAME_SIZE_ERROR) or GOAWAY(FRAME_SIZE_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post(), end_stream=False), data(1, b"x" * 16385))
    return expect_stream_error(k, 1, FRAME_SIZE_ERROR)


@case("frame_headers_too_large", "4.2", "HEADERS frame of 16385 bytes (field block)",
      "GOAWAY(FRAME_SIZE_ERROR)")
def _(c):
    k = c.conn()
    fields = c.req(extra=[("x-pad", "a" * 100)] * 200)
    raw = block(fields)[:16385]
    k.send(headers(1, [], raw=raw))
    return expect_goaway(k, FRAME_SIZE_ERROR)


@case("frame_ping_wrong_length", "6.7", "PING with a 7-byte payload", "GOAWAY(FRAME_SIZE_ERROR)")
def _(c):
    k = c.conn()
    k.send(ping(b"1234567"))
    return expect_goaway(k, FRAME_SIZE_ERROR)


@case("frame_window_update_wrong_length", "6.9", "WINDOW_UPDATE with a 3-byte payload",
      "GOAWAY(FRAME_SIZE_ERROR)")
def _(c):
    k = c.conn()
    k.send(frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"))
    return expect_goaway(k, FRAME_SIZE_ERROR)


@case("frame_rst_stream_wrong_length", "6.4", "RST_STREAM with a 3-byte payload on an open stream",
      "GOAWAY(FRAME_SIZE_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post(), end_stream=False), frame(RST_STREAM, 0, 1, b"\x00\x00\x08"))
    return expect_goaway(k, FRAME_SIZE_ERROR)


@case("frame_priority_wrong_length", "6.3", "PRIORITY with a 4-byte payload on stream 1",
      "RST_STREAM(FRAME_SIZE_ERROR) or GOAWAY(FRAME_SIZE_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post(), end_stream=False), frame(PRIORITY, 0, 1, b"\x00\x00\x00\x00"))
    return expect_stream_error(k, 1, FRAME_SIZE_ERROR)


@case("frame_goaway_too_short", "6.8, 4.2", "GOAWAY with a 7-byte payload", "GOAWAY(FRAME_SIZE_ERROR)")
def _(c):
    k = c.conn()
    k.send(frame(GOAWAY, 0, 0, b"\x00" * 7))
    return expect_goaway(k, FRAME_SIZE_ERROR)


@case("frame_reserved_bit_stream_id", "4.1",
      "HEADERS (GET /) whose stream identifier has the reserved bit set (0x80000001)",
      "the bit is ignored: response 200 on stream 1")
def _(c):
    k = c.conn()
    k.send(headers(0x80000001, c.req()))
    return expect_response(k, 1)


@case("frame_max_size_data_ok", "4.2", "POST with DATA frames of exactly 16384 bytes (4 of them)",
      "response 200, the upstream got 65536 body bytes")
def _(c):
    k = c.conn()
    body = b"y" * 16384
    k.send(headers(1, c.post([("content-length", "65536")]), end_stream=False),
           *[data(1, body, end=(i == 3)) for i in range(4)])
    ok, got = expect_response(k, 1)
    return body_len_is(k, 1, 65536, ok, got)


def body_len_is(k: Conn, sid: int, n: int, ok: bool, got: str):
    try:
        echo = json.loads(bytes(k.stream(sid).body))
        seen = echo.get("body_len")
    except ValueError:
        seen = None
    return ok and seen == n, f"{got}; upstream body_len={seen}"


# -- §6.7 PING

@case("ping_answered", "6.7", "PING with an 8-byte payload", "PING ACK with the same payload")
def _(c):
    k = c.conn()
    ok = k.ping_ok(b"\x01\x02\x03\x04\x05\x06\x07\x08")
    return ok, "PING answered" if ok else f"PING not answered; {k.describe()}"


@case("ping_ack_not_answered", "6.7", "unsolicited PING with ACK flag, then a PING",
      "only the second PING is acknowledged (an ACK is never answered)")
def _(c):
    k = c.conn()
    k.send(ping(b"unsolic!", ack=True))
    ok = k.ping_ok(b"second!!")
    k.wait(lambda: False, 0.2)
    echoed = b"unsolic!" in k.ping_acks
    return ok and not echoed, f"second answered={ok}, ACK echoed={echoed}"


@case("ping_on_stream", "6.7", "PING on stream 1", "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(ping(sid=1))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("ping_unknown_flags", "4.1, 6.7", "PING with unknown flags 0xfe (ACK bit clear)",
      "flags ignored: PING ACK")
def _(c):
    k = c.conn()
    k.send(ping(b"flagged!", flags=0xFE))
    ok = k.wait(lambda: b"flagged!" in k.ping_acks or k.ended())
    return ok and b"flagged!" in k.ping_acks, k.describe() if not ok else "PING answered"


# -- §6.4 RST_STREAM, §6.3 PRIORITY

@case("rst_stream_on_stream_0", "6.4", "RST_STREAM on stream 0", "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(rst_stream(0))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("rst_stream_on_idle", "6.4, 5.1", "RST_STREAM on idle stream 1", "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(rst_stream(1))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("rst_stream_cancel_in_flight", "6.4, 5.1",
      "GET / (upstream answers after 1.5 s), RST_STREAM(CANCEL) at once",
      "the connection stays usable (PING answered); a later GET on stream 3 gets 200")
def _(c):
    k = c.conn()
    k.send(headers(1, c.delayed()), rst_stream(1, CANCEL))
    ok, got = expect_ignored(k)
    return both((ok, got), get_on(c, k, 3))


@case("priority_on_stream_0", "6.3", "PRIORITY on stream 0", "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(priority(0, 1))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("priority_self_dependency", "5.3 (RFC 7540 §5.3.1)", "PRIORITY on stream 1 depending on stream 1 (open)",
      "RST_STREAM(PROTOCOL_ERROR) or GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post(), end_stream=False), priority(1, 1))
    return expect_stream_error(k, 1, PROTOCOL_ERROR)


@case("headers_priority_self_dependency", "5.3 (RFC 7540 §5.3.1)", "HEADERS with PRIORITY flag depending on itself",
      "RST_STREAM(PROTOCOL_ERROR) or GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(1, c.req(), prio=(1, 15)))
    return expect_stream_error(k, 1, PROTOCOL_ERROR)


@case("priority_on_idle_stream", "5.1, 6.3", "PRIORITY on idle stream 3, then GET on stream 3",
      "allowed: no error, response 200 on stream 3")
def _(c):
    k = c.conn()
    k.send(priority(3, 0))
    ok, got = expect_ignored(k)
    return both((ok, got), get_on(c, k, 3))


@case("priority_on_closed_stream", "5.1", "GET / on stream 1 to completion, then PRIORITY on stream 1",
      "allowed: ignored (PING answered)")
def _(c):
    k = c.conn()
    r = get_on(c, k, 1)
    return both(r, expect_ignored(k)) if k.stream(1).ended else r


@case("headers_priority_flag_ok", "6.2", "HEADERS with PRIORITY flag (depends on 0, weight 16)",
      "response 200")
def _(c):
    k = c.conn()
    k.send(headers(1, c.req(), prio=(0, 15)))
    return expect_response(k, 1)


# -- §5.5 extensions: unknown frames and flags

@case("unknown_frame_type_ignored", "4.1, 5.5", "frame of type 0x20 on stream 0",
      "ignored (PING answered)")
def _(c):
    k = c.conn()
    k.send(frame(0x20, 0xFF, 0, b"whatever"))
    return expect_ignored(k)


@case("unknown_frame_type_on_stream_ignored", "5.5", "GET / (slow upstream), frame type 0x21 on stream 1",
      "ignored: response 200 on stream 1")
def _(c):
    k = c.conn()
    k.send(headers(1, c.delayed(300)), frame(0x21, 0, 1, b"ext"))
    return expect_response(k, 1)


@case("unknown_flags_on_headers", "4.1", "HEADERS (GET /) with unused flags 0x42 also set",
      "flags ignored: response 200")
def _(c):
    k = c.conn()
    k.send(headers(1, c.req(), flags=0x42))
    return expect_response(k, 1)


@case("unknown_flags_on_data", "4.1", "POST, DATA with unused flags 0xf6 also set",
      "flags ignored: response 200")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post([("content-length", "3")]), end_stream=False),
           data(1, b"abc", flags=0xF0 | 0x06))
    return expect_response(k, 1)


# -- §5.1 stream states and identifiers

@case("data_on_idle_stream", "5.1, 6.1", "DATA on idle stream 1",
      "GOAWAY(PROTOCOL_ERROR) (§5.1, idle) or GOAWAY(STREAM_CLOSED) (§6.1)")
def _(c):
    k = c.conn()
    k.send(data(1, b"abc"))
    return expect_goaway(k, PROTOCOL_ERROR, STREAM_CLOSED)


@case("window_update_on_idle_stream", "5.1", "WINDOW_UPDATE on idle stream 1",
      "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(window_update(1, 100))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("continuation_on_idle_stream", "5.1, 6.10", "CONTINUATION on idle stream 1",
      "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(continuation(1, block(c.req())))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("data_on_stream_0", "6.1", "DATA on stream 0", "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(data(0, b"abc"))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("headers_on_stream_0", "6.2", "HEADERS on stream 0", "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(0, c.req()))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("even_stream_id", "5.1.1", "HEADERS (GET /) on stream 2", "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(2, c.req()))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("decreasing_stream_id", "5.1.1", "GET / on stream 5 to completion, then HEADERS on stream 3",
      "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    r = get_on(c, k, 5)
    if not r[0]:
        return r
    k.send(headers(3, c.req()))
    ok, got = expect_goaway(k, PROTOCOL_ERROR, sid=3)
    return ok, "stream 5 answered 200; then HEADERS on 3: " + got


@case("stream_id_gap_ok", "5.1.1", "first request on stream 7 (1, 3, 5 skipped)",
      "response 200 (skipped identifiers are implicitly closed)")
def _(c):
    return get_on(c, c.conn(), 7)


@case("headers_on_closed_stream", "5.1, 5.1.1",
      "GET / on stream 1 to completion, then HEADERS (new request) on stream 1",
      "GOAWAY(STREAM_CLOSED), GOAWAY(PROTOCOL_ERROR) or RST_STREAM(STREAM_CLOSED)")
def _(c):
    k = c.conn()
    r = get_on(c, k, 1)
    if not r[0]:
        return r
    k.streams[1] = Stream()  # record only what follows
    k.send(headers(1, c.req()))
    k.react(1)
    s = k.stream(1)
    ok = s.rst == STREAM_CLOSED or (k.goaway is not None and k.goaway[1] in (STREAM_CLOSED, PROTOCOL_ERROR))
    if not ok and s.rst is None and closed_without_goaway(k):
        ok = LENIENT
    return ok, "stream 1 answered 200; then: " + k.describe(1)


@case("data_on_closed_stream", "5.1, 6.1", "GET / on stream 1 to completion, then DATA on stream 1",
      "RST_STREAM(STREAM_CLOSED) or GOAWAY(STREAM_CLOSED)")
def _(c):
    k = c.conn()
    r = get_on(c, k, 1)
    if not r[0]:
        return r
    k.streams[1] = Stream()  # record only what follows
    k.send(data(1, b"late"))
    ok, got = expect_stream_error(k, 1, STREAM_CLOSED)
    return ok, "stream 1 answered 200; then: " + got


@case("data_on_half_closed_remote", "5.1",
      "GET / with END_STREAM (upstream answers after 1.5 s), then DATA on that stream",
      "RST_STREAM(STREAM_CLOSED) or GOAWAY(STREAM_CLOSED)")
def _(c):
    k = c.conn()
    k.send(headers(1, c.delayed()), data(1, b"late"))
    return expect_stream_error(k, 1, STREAM_CLOSED)


@case("headers_on_half_closed_remote", "5.1, 8.1",
      "GET / with END_STREAM (slow upstream), then a second HEADERS (END_STREAM) on it",
      "RST_STREAM(STREAM_CLOSED) or GOAWAY(STREAM_CLOSED)")
def _(c):
    k = c.conn()
    k.send(headers(1, c.delayed()), headers(1, [("x-late", "1")]))
    return expect_stream_error(k, 1, STREAM_CLOSED)


@case("window_update_on_half_closed_remote", "5.1",
      "GET / with END_STREAM (upstream answers after 0.3 s), then WINDOW_UPDATE on it",
      "allowed: response 200")
def _(c):
    k = c.conn()
    k.send(headers(1, c.delayed(300)), window_update(1, 1000))
    return expect_response(k, 1)


@case("data_after_client_rst", "5.1",
      "GET / (slow upstream), RST_STREAM(CANCEL), then DATA on that stream",
      "ignored, RST_STREAM(STREAM_CLOSED) or GOAWAY(STREAM_CLOSED); never another code")
def _(c):
    k = c.conn()
    k.send(headers(1, c.delayed()), rst_stream(1, CANCEL), data(1, b"late"))
    answered = k.ping_ok()
    s = k.stream(1)
    ok = (s.rst in (None, STREAM_CLOSED)) and (k.goaway is None or k.goaway[1] == STREAM_CLOSED) \
        and (answered or k.goaway is not None)
    if not ok and s.rst is None and closed_without_goaway(k):
        ok = LENIENT
    return ok, ("PING answered; " if answered else "") + k.describe(1)


@case("client_push_promise", "6.6, 8.4", "PUSH_PROMISE from the client on an open stream",
      "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post(), end_stream=False),
           frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + block(c.req())))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("concurrent_streams", "5.1.2", "10 GETs on streams 1..19 in one write",
      "10 responses 200")
def _(c):
    k = c.conn()
    sids = list(range(1, 21, 2))
    k.send(*[headers(i, c.req()) for i in sids])
    k.wait(lambda: all(k.stream(i).ended or k.stream(i).rst is not None for i in sids) or k.ended())
    good = [i for i in sids if k.stream(i).status == 200 and k.stream(i).ended]
    return len(good) == len(sids), f"{len(good)}/{len(sids)} responses 200; {k.describe() if len(good) < 10 else ''}"


# -- §5.2, §6.9 flow control

@case("window_update_zero_connection", "6.9", "WINDOW_UPDATE(stream 0, increment 0)",
      "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(window_update(0, 0))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("window_update_zero_stream", "6.9", "open stream, WINDOW_UPDATE(stream 1, increment 0)",
      "RST_STREAM(PROTOCOL_ERROR) or GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post(), end_stream=False), window_update(1, 0))
    return expect_stream_error(k, 1, PROTOCOL_ERROR)


@case("window_overflow_connection", "6.9.1", "WINDOW_UPDATE(stream 0, 2^31-1) over the initial 65535",
      "GOAWAY(FLOW_CONTROL_ERROR)")
def _(c):
    k = c.conn()
    k.send(window_update(0, MAX_WINDOW))
    return expect_goaway(k, FLOW_CONTROL_ERROR)


@case("window_overflow_stream", "6.9.1", "open stream, WINDOW_UPDATE(stream 1, 2^31-1)",
      "RST_STREAM(FLOW_CONTROL_ERROR) or GOAWAY(FLOW_CONTROL_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post(), end_stream=False), window_update(1, MAX_WINDOW))
    return expect_stream_error(k, 1, FLOW_CONTROL_ERROR)


@case("window_overflow_via_settings", "6.9.2",
      "open stream, WINDOW_UPDATE(stream 1) to 2^31-1, then SETTINGS INITIAL_WINDOW_SIZE=65536",
      "GOAWAY(FLOW_CONTROL_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post(), end_stream=False), window_update(1, MAX_WINDOW - 65535))
    k.wait(lambda: k.ended() or k.stream(1).rst is not None, 0.3)
    if k.ended() or k.stream(1).rst is not None:
        return False, "before the SETTINGS: " + k.describe(1)
    k.send(settings((INITIAL_WINDOW_SIZE, 65536)))
    return expect_goaway(k, FLOW_CONTROL_ERROR, sid=1)


@case("window_update_reserved_bit", "6.9", "WINDOW_UPDATE(stream 0) with the reserved bit and increment 1",
      "the bit is ignored: no error (PING answered)")
def _(c):
    k = c.conn()
    k.send(window_update(0, 0x80000001))
    return expect_ignored(k)


class Filler:
    """Sends request bodies on a --stall-port connection (whose upstream never accepts, so the
    proxy cannot pass the bodies on) exactly as far as the windows the server granted allow,
    tracking them from its SETTINGS and WINDOW_UPDATEs, until it grants no more."""

    def __init__(self, c: Ctx):
        self.c = c
        self.k = c.conn(port=c.opts.stall_port)
        s = self.k.server_settings[0] if self.k.server_settings else {}
        self.init = s.get(INITIAL_WINDOW_SIZE, 65535)
        self.frame_max = s.get(MAX_FRAME_SIZE, 16384)
        self.sent: dict[int, int] = {}
        self.next_sid = 1

    def open(self) -> int:
        sid, self.next_sid = self.next_sid, self.next_sid + 2
        self.k.send(headers(sid, self.c.post(), end_stream=False))
        self.sent[sid] = 0
        return sid

    def conn_avail(self) -> int:
        return 65535 + self.k.conn_granted - sum(self.sent.values())

    def avail(self, sid: int) -> int:
        return self.init + self.k.stream_granted.get(sid, 0) - self.sent[sid]

    def send(self, sid: int, n: int) -> None:
        self.k.send(data(sid, b"f" * n, end=False))
        self.sent[sid] += n

    def fill(self, sids, new_streams: bool, bound: int = 8 << 20, idle: float = 0.3) -> bool:
        """Uses up the windows of `sids` (opening more streams when `new_streams`) until the
        server stops granting for `idle` s; False when it granted `bound` bytes first."""
        while sum(self.sent.values()) < bound and not self.k.ended() and self.c.remaining() > 1:
            self.k.poll()
            open_ = [i for i in sids if self.avail(i) > 0]
            if new_streams and not open_ and self.conn_avail() > 0:
                sids.append(self.open())
                continue
            if open_ and self.conn_avail() > 0:
                self.send(open_[0], min(self.avail(open_[0]), self.conn_avail(), self.frame_max, 16384))
                continue
            granted = (self.k.conn_granted, dict(self.k.stream_granted))
            self.k.wait(lambda: (self.k.conn_granted, self.k.stream_granted) != granted, idle)
            if (self.k.conn_granted, self.k.stream_granted) == granted:
                return True
        return False

    def state(self) -> str:
        return f"{sum(self.sent.values())} body bytes on {len(self.sent)} stream(s) accepted, " \
               f"connection window left {self.conn_avail()}"


def needs_stall_port(c: Ctx):
    return None if c.opts.stall_port else (False, "needs --stall-port")


@case("data_beyond_stream_window", "6.9.1, 6.9",
      "POST on the --stall-port listener; DATA exactly up to the stream window the server "
      "granted (it stops granting: the upstream never accepts), then 1 byte more",
      "RST_STREAM(FLOW_CONTROL_ERROR) or GOAWAY(FLOW_CONTROL_ERROR)", timeout=LONG_TIMEOUT)
def _(c):
    if needs_stall_port(c):
        return needs_stall_port(c)
    f = Filler(c)
    sid = f.open()
    if not f.fill([sid], new_streams=False):
        return False, "the server kept granting window: " + f.state() + "; " + f.k.describe()
    state = f.state()
    f.k.send(data(sid, b"!", end=False))
    ok, got = expect_stream_error(f.k, sid, FLOW_CONTROL_ERROR)
    return ok, f"{state}; stream window left {f.avail(sid)}; then {got}"


@case("data_beyond_connection_window", "6.9.1, 6.9",
      "POSTs on the --stall-port listener, DATA on as many streams as it takes to use up the "
      "connection window the server granted, then 1 byte on a stream with window left",
      "GOAWAY(FLOW_CONTROL_ERROR)", timeout=LONG_TIMEOUT)
def _(c):
    if needs_stall_port(c):
        return needs_stall_port(c)
    f = Filler(c)
    sids = [f.open()]
    if not f.fill(sids, new_streams=True):
        return False, "the server kept granting window: " + f.state() + "; " + f.k.describe()
    state = f.state()
    spare = next((i for i in sids if f.avail(i) > 0), None) or f.open()
    f.k.send(data(spare, b"!", end=False))
    ok, got = expect_goaway(f.k, FLOW_CONTROL_ERROR)
    return ok, f"{state}; then 1 byte on stream {spare}: {got}"


@case("flow_request_body_backpressure", "5.2, 10.5",
      "POST on the --stall-port listener (upstream never accepts); DATA as fast as the "
      "granted windows allow", "the proxy stops granting window before 8 MiB is accepted",
      timeout=LONG_TIMEOUT)
def _(c):
    if needs_stall_port(c):
        return needs_stall_port(c)
    f = Filler(c)
    sid = f.open()
    ok = f.fill([sid], new_streams=False)
    return ok, ("stalled: " if ok else "kept granting: ") + f.state() + \
        ("" if not f.k.ended() else "; " + f.k.describe())


@case("response_respects_stream_window", "6.9.1",
      "SETTINGS INITIAL_WINDOW_SIZE=0; GET /; WINDOW_UPDATE(stream, 100); later one for the rest",
      "HEADERS at once, no DATA, then exactly 100 DATA bytes, then the rest to END_STREAM")
def _(c):
    k = c.conn(client_settings=[(INITIAL_WINDOW_SIZE, 0)])
    k.send(headers(1, c.req()))
    k.wait(lambda: k.stream(1).status is not None or k.ended())
    k.wait(lambda: k.stream(1).data > 0 or k.ended(), 0.4)
    before = k.stream(1).data
    k.send(window_update(1, 100))
    k.wait(lambda: k.stream(1).data >= 100 or k.ended())
    k.wait(lambda: k.stream(1).data > 100 or k.ended(), 0.3)
    mid = k.stream(1).data
    k.send(window_update(1, 1 << 20))
    ok, got = expect_response(k, 1)
    return ok and before == 0 and mid == 100, f"{before} bytes before, {mid} after +100; {got}"


@case("response_respects_connection_window", "6.9.1",
      "SETTINGS INITIAL_WINDOW_SIZE=2^31-1; GET /big; no connection WINDOW_UPDATE",
      "exactly 65535 DATA bytes (the connection window), then nothing", timeout=LONG_TIMEOUT)
def _(c):
    k = c.conn(client_settings=[(INITIAL_WINDOW_SIZE, MAX_WINDOW)])
    k.send(headers(1, c.req(c.opts.big_path)))
    k.wait(lambda: k.stream(1).data >= 65535 or k.ended(), 4)
    k.wait(lambda: k.stream(1).data > 65535 or k.ended(), 0.5)
    s = k.stream(1)
    return s.data == 65535 and not k.ended(), f"{s.data} DATA bytes; {k.describe(1)}"


@case("big_response_complete", "6.9", "GET /big with large windows (INITIAL_WINDOW_SIZE 2^31-1, "
      "connection WINDOW_UPDATE 2^31-65536)", "response 200 with exactly content-length DATA bytes",
      timeout=LONG_TIMEOUT)
def _(c):
    k = c.conn(client_settings=[(INITIAL_WINDOW_SIZE, MAX_WINDOW)], keep_body=0)
    k.send(window_update(0, MAX_WINDOW - 65535), headers(1, c.req(c.opts.big_path)))
    ok, got = expect_response(k, 1, timeout=8)
    s = k.stream(1)
    cl = dict(s.headers).get("content-length")
    return ok and cl is not None and int(cl) == s.data and s.data > 1 << 20, \
        f"{got}; content-length {cl}, {s.data} DATA bytes"


# -- §8.2 field validity

def malformed_case(name: str, section: str, sends: str, fields_fn):
    @case(name, section, sends, "malformed: RST_STREAM(PROTOCOL_ERROR), GOAWAY(PROTOCOL_ERROR) or 4xx")
    def _(c):
        k = c.conn()
        k.send(headers(1, fields_fn(c)))
        return expect_malformed(k, 1)


malformed_case("header_uppercase_name", "8.2.1", "GET / with field name 'X-Upper'",
               lambda c: c.req(extra=[("X-Upper", "1")]))
malformed_case("header_connection", "8.2.2", "GET / with 'connection: keep-alive'",
               lambda c: c.req(extra=[("connection", "keep-alive")]))
malformed_case("header_keep_alive", "8.2.2", "GET / with 'keep-alive: timeout=5'",
               lambda c: c.req(extra=[("keep-alive", "timeout=5")]))
malformed_case("header_proxy_connection", "8.2.2", "GET / with 'proxy-connection: keep-alive'",
               lambda c: c.req(extra=[("proxy-connection", "keep-alive")]))
malformed_case("header_transfer_encoding", "8.2.2", "GET / with 'transfer-encoding: chunked'",
               lambda c: c.req(extra=[("transfer-encoding", "chunked")]))
malformed_case("header_upgrade", "8.2.2", "GET / with 'upgrade: websocket'",
               lambda c: c.req(extra=[("upgrade", "websocket")]))
malformed_case("header_te_not_trailers", "8.2.2", "GET / with 'te: gzip'",
               lambda c: c.req(extra=[("te", "gzip")]))
malformed_case("header_value_crlf", "8.2.1", "GET / with a field value containing CR LF",
               lambda c: c.req(extra=[("x-a", "b\r\nx-injected: 1")]))
malformed_case("header_value_nul", "8.2.1", "GET / with a field value containing NUL",
               lambda c: c.req(extra=[("x-a", "b\x00c")]))
malformed_case("header_value_leading_space", "8.2.1", "GET / with field value ' padded'",
               lambda c: c.req(extra=[("x-a", " padded")]))
malformed_case("header_name_space", "8.2.1", "GET / with field name 'x a'",
               lambda c: c.req(extra=[("x a", "1")]))
malformed_case("header_name_colon", "8.2.1", "GET / with field name 'x:a' (colon inside)",
               lambda c: c.req(extra=[("x:a", "1")]))
malformed_case("header_name_empty", "8.2.1", "GET / with an empty field name",
               lambda c: c.req(extra=[("", "1")]))
malformed_case("pseudo_missing_method", "8.3.1", "request without :method",
               lambda c: [f for f in c.req() if f[0] != ":method"])
malformed_case("pseudo_missing_scheme", "8.3.1", "request without :scheme",
               lambda c: [f for f in c.req() if f[0] != ":scheme"])
malformed_case("pseudo_missing_path", "8.3.1", "request without :path",
               lambda c: [f for f in c.req() if f[0] != ":path"])
malformed_case("pseudo_duplicate_method", "8.3.1", "request with :method twice",
               lambda c: c.req()[:1] + c.req())
malformed_case("pseudo_duplicate_path", "8.3.1", "request with :path twice",
               lambda c: c.req() + [(":path", "/")])
malformed_case("pseudo_duplicate_scheme", "8.3.1", "request with :scheme twice",
               lambda c: c.req()[:2] + c.req()[1:])
malformed_case("pseudo_after_regular", "8.3", "':path' after a regular field",
               lambda c: [f for f in c.req() if f[0] != ":path"] + [("x-a", "1"), (":path", "/")])
malformed_case("pseudo_unknown", "8.3", "request with pseudo-header ':foo'",
               lambda c: c.req(extra=[(":foo", "bar")]))
malformed_case("pseudo_status_in_request", "8.3", "request with response pseudo-header ':status'",
               lambda c: c.req(extra=[(":status", "200")]))
malformed_case("pseudo_empty_path", "8.3.1", "request with an empty :path",
               lambda c: [(k, "" if k == ":path" else v) for k, v in c.req()])
malformed_case("connect_with_path", "8.5", "CONNECT with :scheme and :path",
               lambda c: c.req(method="CONNECT"))
malformed_case("connect_without_authority", "8.5", "CONNECT with only :method",
               lambda c: [(":method", "CONNECT")])


@case("header_te_trailers_ok", "8.2.2", "GET / with 'te: trailers'", "response 200")
def _(c):
    k = c.conn()
    k.send(headers(1, c.req(extra=[("te", "trailers")])))
    return expect_response(k, 1)


@case("host_without_authority_ok", "8.3.1", "GET / with 'host' and no :authority", "response 200")
def _(c):
    k = c.conn()
    k.send(headers(1, [f for f in c.req() if f[0] != ":authority"] + [("host", c.opts.authority)]))
    return expect_response(k, 1)


@case("connect_well_formed", "8.5", "CONNECT with only :method and :authority",
      "not treated as malformed: any response (the route may refuse it), or RST_STREAM other "
      "than PROTOCOL_ERROR")
def _(c):
    k = c.conn()
    k.send(headers(1, [(":method", "CONNECT"), (":authority", "127.0.0.1:9")], end_stream=False))
    k.react(1)
    s = k.stream(1)
    ok = (s.status is not None or (s.rst is not None and s.rst != PROTOCOL_ERROR)) and \
        (k.goaway is None or k.goaway[1] != PROTOCOL_ERROR)
    return ok, k.describe(1)


@case("response_no_connection_headers", "8.2.2",
      "GET / whose HTTP/1.1 upstream answers chunked with 'connection: keep-alive' and "
      "'keep-alive: timeout=5'",
      "response 200 without connection-specific fields; field names lower-case; pseudo first")
def _(c):
    k = c.conn()
    k.send(headers(1, c.req(extra=[("x-echo-chunked", "1"), ("x-echo-header", "connection: keep-alive"),
                                   ("x-echo-header", "keep-alive: timeout=5")])))
    ok, got = expect_response(k, 1)
    fields = k.stream(1).headers
    names = [n for n, _ in fields]
    bad = [n for n in names if n in ("connection", "keep-alive", "transfer-encoding", "upgrade",
                                     "proxy-connection") or n != n.lower()]
    pseudo_ok = all(not n.startswith(":") for n in names[1:]) and names[:1] == [":status"]
    return ok and not bad and pseudo_ok, f"{got}; forbidden/bad names {bad}; pseudo first {pseudo_ok}"


@case("head_response_no_body", "8.1", "HEAD /", "response 200 with no DATA bytes")
def _(c):
    k = c.conn()
    k.send(headers(1, c.req(method="HEAD")))
    ok, got = expect_response(k, 1)
    return ok and k.stream(1).data == 0, f"{got}; {k.stream(1).data} DATA bytes"


# -- §8.1 messages: trailers and content-length

@case("trailers_ok", "8.1", "POST, DATA, trailers HEADERS (END_STREAM) with 'x-trailer: 1'",
      "response 200")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post(), end_stream=False), data(1, b"abc", end=False),
           headers(1, [("x-trailer", "1")]))
    return expect_response(k, 1)


@case("trailers_with_pseudo", "8.1", "POST, DATA, trailers containing ':path'",
      "malformed: RST_STREAM(PROTOCOL_ERROR), GOAWAY(PROTOCOL_ERROR) or 4xx")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post(), end_stream=False), data(1, b"abc", end=False),
           headers(1, [(":path", "/x")]))
    return expect_malformed(k, 1)


@case("trailers_without_end_stream", "8.1", "POST, DATA, a second HEADERS without END_STREAM",
      "malformed: RST_STREAM(PROTOCOL_ERROR), GOAWAY(PROTOCOL_ERROR) or 4xx")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post(), end_stream=False), data(1, b"abc", end=False),
           headers(1, [("x-trailer", "1")], end_stream=False))
    return expect_malformed(k, 1)


@case("content_length_larger_than_data", "8.1.1", "POST 'content-length: 10', 5 DATA bytes, END_STREAM",
      "malformed: RST_STREAM(PROTOCOL_ERROR), GOAWAY(PROTOCOL_ERROR) or 4xx")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post([("content-length", "10")]), end_stream=False), data(1, b"12345"))
    return expect_malformed(k, 1)


@case("content_length_smaller_than_data", "8.1.1", "POST 'content-length: 3', 5 DATA bytes",
      "malformed: RST_STREAM(PROTOCOL_ERROR), GOAWAY(PROTOCOL_ERROR) or 4xx")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post([("content-length", "3")]), end_stream=False), data(1, b"12345"))
    return expect_malformed(k, 1)


@case("content_length_with_end_stream_headers", "8.1.1",
      "POST 'content-length: 5' with END_STREAM on HEADERS (no DATA)",
      "malformed: RST_STREAM(PROTOCOL_ERROR), GOAWAY(PROTOCOL_ERROR) or 4xx")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post([("content-length", "5")])))
    return expect_malformed(k, 1)


@case("content_length_ok", "8.1.1", "POST 'content-length: 5', DATA 2+3 bytes",
      "response 200, upstream got 5 body bytes")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post([("content-length", "5")]), end_stream=False),
           data(1, b"12", end=False), data(1, b"345"))
    ok, got = expect_response(k, 1)
    return body_len_is(k, 1, 5, ok, got)


@case("data_padded_ok", "6.1", "POST 'content-length: 5', padded DATA (pad 10) of 5 bytes",
      "response 200; padding not counted as body")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post([("content-length", "5")]), end_stream=False), data(1, b"12345", pad=10))
    ok, got = expect_response(k, 1)
    return body_len_is(k, 1, 5, ok, got)


@case("headers_padded_ok", "6.2", "padded HEADERS (pad 20) GET /", "response 200")
def _(c):
    k = c.conn()
    k.send(headers(1, c.req(), pad=20))
    return expect_response(k, 1)


@case("data_padding_too_long", "6.1", "DATA whose pad length equals the payload length",
      "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post(), end_stream=False), frame(DATA, PADDED, 1, bytes([5]) + b"abcd"))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("headers_padding_too_long", "6.2", "HEADERS whose pad length exceeds the payload",
      "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    raw = block(c.req())
    k.send(frame(HEADERS, PADDED | END_HEADERS | END_STREAM, 1, bytes([len(raw) + 1]) + raw))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("data_empty_end_stream_ok", "6.1", "POST HEADERS, empty DATA with END_STREAM", "response 200")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post(), end_stream=False), data(1, b""))
    return expect_response(k, 1)


# -- §4.3 field blocks and HPACK

@case("hpack_bad_index", "4.3", "HEADERS whose block references static/dynamic index 100 (empty table)",
      "GOAWAY(COMPRESSION_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(1, [], raw=b"\x82\x86\x84" + hpint(100, 7, 0x80)))
    return expect_goaway(k, COMPRESSION_ERROR)


@case("hpack_table_size_update_too_large", "4.3", "block starting with a dynamic table size update to "
      "8192 (> the 4096 default)", "GOAWAY(COMPRESSION_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(1, [], raw=hpint(8192, 5, 0x20) + block(c.req())))
    return expect_goaway(k, COMPRESSION_ERROR)


@case("hpack_bad_huffman", "4.3", "literal value Huffman-coded as 0xffffffff (contains EOS)",
      "GOAWAY(COMPRESSION_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(1, [], raw=block(c.req()) + b"\x00\x03x-a" + b"\x84\xff\xff\xff\xff"))
    return expect_goaway(k, COMPRESSION_ERROR)


@case("hpack_truncated_block", "4.3", "block ending in the middle of a literal (END_HEADERS)",
      "GOAWAY(COMPRESSION_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(1, [], raw=block(c.req()) + b"\x00\x03x-a\x0aab"))
    return expect_goaway(k, COMPRESSION_ERROR)


@case("hpack_state_kept_after_cancel", "4.3",
      "HEADERS on stream 1 adding 'x-state: kept' to the dynamic table, RST_STREAM(1), then "
      "GET on stream 3 referencing that entry by index",
      "response 200 and the upstream saw 'x-state: kept'")
def _(c):
    k = c.conn()
    first = block(c.req(extra=[("x-echo-delay-ms", "200")])) + lit("x-state", "kept", index=True)
    second = block(c.req()) + hpint(62, 7, 0x80)
    k.send(headers(1, [], raw=first), rst_stream(1, CANCEL), headers(3, [], raw=second))
    ok, got = expect_response(k, 3)
    seen = b'"x-state", "kept"' in bytes(k.stream(3).body)
    return ok and seen, f"{got}; upstream saw x-state: kept: {seen}"


@case("hpack_dynamic_table_ok", "4.3", "two GETs encoded by the hpack library (2nd uses indexed fields)",
      "two responses 200")
def _(c):
    k = c.conn()
    enc = hpack.Encoder()
    k.send(headers(1, [], raw=enc.encode(c.req(extra=[("x-rep", "value")]))))
    r1 = expect_response(k, 1)
    k.send(headers(3, [], raw=enc.encode(c.req(extra=[("x-rep", "value")]))))
    return both(r1, expect_response(k, 3))


# -- §6.10 CONTINUATION

@case("continuation_ok", "6.10", "HEADERS without END_HEADERS, CONTINUATION with END_HEADERS",
      "response 200")
def _(c):
    k = c.conn()
    raw = block(c.req())
    k.send(headers(1, [], raw=raw[:10], end_headers=False), continuation(1, raw[10:]))
    return expect_response(k, 1)


@case("continuation_many_ok", "6.10", "header block split into 1-byte CONTINUATION frames",
      "response 200")
def _(c):
    k = c.conn()
    raw = block(c.req())
    k.send(headers(1, [], raw=raw[:1], end_headers=False),
           *[continuation(1, raw[i:i + 1], end_headers=(i == len(raw) - 1)) for i in range(1, len(raw))])
    return expect_response(k, 1)


@case("continuation_without_headers", "6.10", "GET / completed, then CONTINUATION on stream 1",
      "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    r = get_on(c, k, 1)
    if not r[0]:
        return r
    k.send(continuation(1, lit("x-a", "1")))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("continuation_after_end_headers", "6.10", "HEADERS (END_HEADERS, no END_STREAM), then CONTINUATION",
      "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(1, c.post(), end_stream=False), continuation(1, lit("x-a", "1")))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("continuation_other_stream", "6.10", "HEADERS(1) without END_HEADERS, then CONTINUATION on stream 3",
      "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    raw = block(c.req())
    k.send(headers(1, [], raw=raw[:10], end_headers=False), continuation(3, raw[10:]))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("continuation_interleaved_data", "6.10", "HEADERS(1) without END_HEADERS, then DATA(1)",
      "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    raw = block(c.post())
    k.send(headers(1, [], raw=raw, end_stream=False, end_headers=False), data(1, b"x"))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("continuation_interleaved_ping", "6.10", "HEADERS(1) without END_HEADERS, then PING",
      "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(1, [], raw=block(c.req()), end_headers=False), ping())
    return expect_goaway(k, PROTOCOL_ERROR)


@case("continuation_interleaved_headers", "6.10",
      "HEADERS(1) without END_HEADERS, then HEADERS(3)", "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(1, [], raw=block(c.req()), end_headers=False), headers(3, c.req()))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("continuation_interleaved_unknown", "6.10, 5.5",
      "HEADERS(1) without END_HEADERS, then an unknown frame (type 0x20)", "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(headers(1, [], raw=block(c.req()), end_headers=False), frame(0x20, 0, 1, b"ext"))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("continuation_on_stream_0", "6.10", "HEADERS(1) without END_HEADERS, then CONTINUATION on stream 0",
      "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    raw = block(c.req())
    k.send(headers(1, [], raw=raw[:10], end_headers=False), continuation(0, raw[10:]))
    return expect_goaway(k, PROTOCOL_ERROR)


# -- §6.8 GOAWAY

@case("goaway_from_client_in_flight_completes", "6.8",
      "GET / (upstream answers after 0.3 s), then GOAWAY(NO_ERROR, last=0) from the client",
      "the in-flight request still gets response 200 (the client's GOAWAY names server streams)")
def _(c):
    k = c.conn()
    k.send(headers(1, c.delayed(300)), goaway(0, NO_ERROR))
    k.react(1)
    s = k.stream(1)
    return s.status == 200 and s.ended, k.describe(1)


@case("goaway_on_stream", "6.8", "GOAWAY on stream 1", "GOAWAY(PROTOCOL_ERROR)")
def _(c):
    k = c.conn()
    k.send(goaway(0, NO_ERROR, sid=1))
    return expect_goaway(k, PROTOCOL_ERROR)


@case("goaway_last_stream_id", "6.8", "GET / on stream 1 to completion, then DATA on stream 0",
      "GOAWAY(PROTOCOL_ERROR, last=1): the processed stream is covered")
def _(c):
    k = c.conn()
    r = get_on(c, k, 1)
    if not r[0]:
        return r
    k.send(data(0, b"x"))
    ok, got = expect_goaway(k, PROTOCOL_ERROR)
    return ok is True and k.goaway[0] == 1, got


# -- DoS patterns (run one at a time; each also checks that a fresh connection is served)

def survived(c: Ctx, k: Conn, payload: bytes, what: str):
    """After a flood: the connection was closed (GOAWAY any code / TCP close) or is still
    usable (PING with `payload` answered); and a fresh connection still gets 200."""
    answered = False
    if not k.ended():
        answered = k.ping_ok(payload, timeout=3)
    fate = "still usable (PING answered)" if answered else k.describe()
    fresh_ok, note = c.still_serving()
    ok = (answered or k.ended()) and fresh_ok
    return ok, f"{what}; flooded connection {fate}; {note}"


@case("dos_continuation_flood", "6.10, 10.5", "HEADERS without END_HEADERS, then up to 20000 "
      "CONTINUATION frames of 110-byte fields (2.2 MB), never END_HEADERS",
      "the proxy resets or closes (RST_STREAM, GOAWAY any code, or TCP close) instead of "
      "collecting the block; a fresh connection gets 200", timeout=LONG_TIMEOUT, exclusive=True)
def _(c):
    k = c.conn()
    k.send(headers(1, [], raw=block(c.req()), end_headers=False))
    piece = continuation(1, lit("x-flood", "f" * 100), end_headers=False)
    sent = 0
    for _ in range(200):
        if not k.send(piece * 100) or k.ended():
            break
        sent += 100 * len(piece)
        k.poll()
        if k.stream(1).rst is not None or k.ended():
            break
    k.react(1, 1.0)
    reacted = k.ended() or k.stream(1).rst is not None or k.send_error is not None
    fresh_ok, note = c.still_serving()
    return reacted and fresh_ok, \
        f"{sent} bytes written (socket buffers included); {k.send_error or ''} {k.describe(1)}; {note}"


@case("dos_continuation_flood_empty", "6.10, 10.5", "HEADERS without END_HEADERS, then up to 100000 "
      "empty CONTINUATION frames (0.9 MB), never END_HEADERS",
      "the proxy resets or closes (RST_STREAM, GOAWAY any code, or TCP close); a fresh "
      "connection gets 200", timeout=LONG_TIMEOUT, exclusive=True)
def _(c):
    k = c.conn()
    k.send(headers(1, [], raw=block(c.req()), end_headers=False))
    piece = continuation(1, b"", end_headers=False)
    frames = 0
    for _ in range(100):
        if not k.send(piece * 1000):
            break
        frames += 1000
        k.poll()
        if k.stream(1).rst is not None or k.ended():
            break
    k.react(1, 1.5)
    reacted = k.ended() or k.stream(1).rst is not None or k.send_error is not None
    fresh_ok, note = c.still_serving()
    return reacted and fresh_ok, f"{frames} frames sent; {k.send_error or ''} {k.describe(1)}; {note}"


@case("dos_rapid_reset", "5.1, 10.5", "1000 x (HEADERS GET / + RST_STREAM(CANCEL)) in one burst, "
      "then PING", "the connection is closed (GOAWAY any code or TCP close) or stays usable; a "
      "fresh connection gets 200", timeout=LONG_TIMEOUT, exclusive=True)
def _(c):
    k = c.conn()
    burst = b"".join(headers(i, c.req()) + rst_stream(i, CANCEL) for i in range(1, 2001, 2))
    k.send(burst)
    k.wait(lambda: k.ended(), 0.5)
    return survived(c, k, b"afterrst", "1000 streams opened and reset")


@case("dos_settings_flood", "6.5, 10.5", "10000 SETTINGS frames without reading the ACKs, then PING",
      "closed (GOAWAY any code or TCP close) or every SETTINGS acknowledged and PING answered; a "
      "fresh connection gets 200", timeout=LONG_TIMEOUT, exclusive=True)
def _(c):
    k = c.conn()
    k.send(settings((MAX_CONCURRENT_STREAMS, 100)) * 10000)
    k.wait(lambda: False, 0.5)
    ok, got = survived(c, k, b"aftersts", "10000 SETTINGS sent")
    if not k.ended():
        ok = ok and k.settings_acks >= 10001
        got += f"; {k.settings_acks} SETTINGS ACKs"
    return ok, got


@case("dos_ping_flood", "6.7, 10.5", "10000 PINGs without reading the ACKs, then a last PING",
      "closed (GOAWAY any code or TCP close) or the last PING answered; a fresh connection "
      "gets 200", timeout=LONG_TIMEOUT, exclusive=True)
def _(c):
    k = c.conn()
    k.send(ping(b"floodpng") * 10000)
    k.wait(lambda: False, 0.5)
    return survived(c, k, b"lastping", "10000 PINGs sent")


@case("dos_empty_data_flood", "6.1, 10.5", "POST, then 10000 empty DATA frames without END_STREAM",
      "closed (GOAWAY any code or TCP close), stream reset, or still usable; a fresh connection "
      "gets 200", timeout=LONG_TIMEOUT, exclusive=True)
def _(c):
    k = c.conn()
    k.send(headers(1, c.post(), end_stream=False), data(1, b"", end=False) * 10000)
    k.wait(lambda: k.ended(), 0.5)
    return survived(c, k, b"afterdat", "10000 empty DATA frames sent")


@case("dos_header_list_too_large", "6.5.2, 10.5.1",
      "GET / with 200 fields of 1 KiB (200 KiB field section, HEADERS + CONTINUATIONs)",
      "not forwarded: 431 or other 4xx, RST_STREAM or GOAWAY (any code); a fresh connection "
      "gets 200", timeout=LONG_TIMEOUT, exclusive=True)
def _(c):
    k = c.conn()
    raw = block(c.req(extra=[(f"x-big-{i}", "v" * 1024) for i in range(200)]))
    pieces = [raw[i:i + 16384] for i in range(0, len(raw), 16384)]
    k.send(headers(1, [], raw=pieces[0], end_headers=False),
           *[continuation(1, p, end_headers=(i == len(pieces) - 1)) for i, p in enumerate(pieces[1:], 1)])
    k.react(1)
    s = k.stream(1)
    rejected = (s.status is not None and 400 <= s.status < 500) or \
        (s.status is None and (s.rst is not None or k.ended()))
    fresh_ok, note = c.still_serving()
    return rejected and fresh_ok, f"{k.describe(1)}; {note}"


@case("dos_zero_window_stall", "6.9, 10.5",
      "2 connections each GET /big and never send WINDOW_UPDATE (65535-byte windows)",
      "each gets exactly 65535 DATA bytes then nothing; they stay usable (PING answered); a "
      "fresh connection gets 200; with --proxy-pid, the proxy's RSS grows by less than half "
      "of the stalled bodies' size", timeout=LONG_TIMEOUT, exclusive=True)
def _(c):
    pid = c.opts.proxy_pid
    rss0 = rss_kib(pid) if pid else None
    conns = [c.conn() for _ in range(2)]
    for k in conns:
        k.send(headers(1, c.req(c.opts.big_path)))
    for k in conns:
        k.wait(lambda k=k: k.stream(1).data >= 65535 or k.ended(), 3)
    time.sleep(2.0)  # an unbounded proxy keeps reading the upstream meanwhile
    for k in conns:
        k.poll()
    rss1 = rss_kib(pid) if pid else None
    got_bytes = [k.stream(1).data for k in conns]
    stalled = sum(int(dict(k.stream(1).headers).get("content-length", 0)) for k in conns)
    usable = [k.ping_ok(b"stalled!") for k in conns]
    fresh_ok, note = c.still_serving()
    growth = None if pid is None else (rss1 - rss0) // 1024
    ok = all(b == 65535 for b in got_bytes) and all(usable) and fresh_ok and \
        (growth is None or growth < (stalled >> 20) // 2)
    return ok, (f"DATA bytes per stalled stream {got_bytes}; PING answered {usable}; {note}; "
                + ("RSS not checked (no --proxy-pid)" if growth is None
                   else f"RSS grew {growth} MiB while {stalled >> 20} MiB of bodies were stalled"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------------------------
# Runner

def run_case(spec: dict, opts, results: dict) -> None:
    ctx = Ctx(opts, spec["timeout"])
    spec["ctx"] = ctx
    try:
        ok, got = spec["fn"](ctx)
    except Closed as e:
        ok, got = False, f"connection failed: {e}"
    except Exception as e:  # noqa: BLE001 -- a broken case is a failed case, with the reason
        ok, got = False, f"case raised {type(e).__name__}: {e}"
    finally:
        ctx.abort()
    results.setdefault(spec["name"], (ok if ok == LENIENT else bool(ok), got))


def run(selected: list[dict], opts) -> dict:
    results: dict[str, tuple[bool, str]] = {}
    pending = list(selected)
    running: list[tuple[dict, threading.Thread, float]] = []
    end = time.monotonic() + opts.total_timeout
    while pending or running:
        now = time.monotonic()
        for item in list(running):
            spec, t, started = item
            if not t.is_alive():
                running.remove(item)
            elif now > started + spec["timeout"] + 1.0:
                spec["ctx"].abort()
                results.setdefault(spec["name"], (False, f"exceeded the hard bound of {spec['timeout']:g}s"))
                running.remove(item)
        if now > end:
            for spec in pending:
                results[spec["name"]] = (False, "not run: total time bound reached")
            pending = []
        while pending and len(running) < opts.jobs:
            spec = pending[0]
            busy = bool(running)
            if busy and (spec["exclusive"] or any(r[0]["exclusive"] for r in running)):
                break
            pending.pop(0)
            t = threading.Thread(target=run_case, args=(spec, opts, results), daemon=True)
            running.append((spec, t, time.monotonic()))
            t.start()
        time.sleep(0.005)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int)
    p.add_argument("--stall-port", type=int,
                   help="a listener routing to an upstream that never accepts, with small receive "
                        "windows and buffers (for the request flow-control cases)")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--sni")
    p.add_argument("--ca")
    p.add_argument("--path", default="/")
    p.add_argument("--big-path", default="/big")
    p.add_argument("--authority", help="the :authority to send (default host:port or --sni)")
    p.add_argument("--proxy-pid", type=int, help="the proxy's PID, to bound its RSS growth")
    p.add_argument("--case", action="append", default=[], help="run only this case (repeatable)")
    p.add_argument("--jobs", type=int, default=4, help="cases run at once (DoS cases run alone)")
    p.add_argument("--total-timeout", type=float, default=150.0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--list", action="store_true", help="print the cases as a Markdown table")
    opts = p.parse_args()
    names = [s["name"] for s in CASES]
    assert len(set(names)) == len(names), "duplicate case names"
    if opts.list:
        print("| case | RFC 9113 | sends | expected |\n|---|---|---|---|")
        for s in CASES:
            print(f"| `{s['name']}` | §{s['section']} | {s['sends']} | {s['expects']} |")
        return 0
    if opts.port is None:
        p.error("--port is required")
    unknown = [n for n in opts.case if n not in names]
    if unknown:
        p.error(f"unknown case(s): {', '.join(unknown)}")
    opts.authority = opts.authority or opts.sni or f"{opts.host}:{opts.port}"
    selected = [s for s in CASES if not opts.case or s["name"] in opts.case]
    results = run(selected, opts)
    failed = lenient = 0
    report = {}
    for s in selected:
        v, got = results.get(s["name"], (False, "no result"))
        failed += not v
        lenient += v == LENIENT
        if v == LENIENT:
            got += " [lenient: closed without the GOAWAY that §5.4.1 says SHOULD be sent]"
        report[s["name"]] = {"ok": bool(v), "strict": v is True, "got": got}
        if not opts.json:
            print(f"{'PASS' if v else 'FAIL'} {s['name']}: expected {s['expects']}, got {got}", flush=True)
    if opts.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{len(selected) - failed}/{len(selected)} cases passed ({lenient} of them leniently)")
    sys.stdout.flush()
    os._exit(1 if failed else 0)  # daemon threads of aborted cases must not delay the exit


if __name__ == "__main__":
    sys.exit(main())
