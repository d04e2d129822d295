#!/usr/bin/env python3
"""Idle-connection client: opens N keep-alive connections, one GET each, then holds them idle.

Every connection sends one keep-alive `GET /small` and reads the whole response, so each proxy
has set up both sides of the relay and moved bytes both ways. Once all are done it prints
`OPEN {json}` and holds the connections, idle, until a line (or EOF) arrives on stdin; then it
checks that none was closed meanwhile, closes them all and prints one `BENCHJSON {json}` line.

With --tls every connection first completes a TLS 1.3 handshake (Python's ssl, OpenSSL; the
certificate is not checked; --sni names the server), then sends the GET inside TLS: the idle
connections are TLS sessions at rest (the session tickets the server sent were read too).

With --h2 every connection speaks HTTP/2 with prior knowledge (RFC 9113 §3.3): the client
preface and an empty SETTINGS, then `GET /small` on stream 1; a connection counts as open once
the server's SETTINGS arrived (and was acknowledged), the server acknowledged ours, and stream
1 ended. A GOAWAY or RST_STREAM fails it; one while held counts it as closed.
"""
from __future__ import annotations

import argparse
import errno
import json
import resource
import selectors
import select
import socket
import ssl
import sys
import time

REQ = b"GET /small HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench-idle\r\n\r\n"

# HTTP/2 frame types (RFC 9113 §6) and the flags used here.
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0, 1, 3, 4, 6, 7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def h2_frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + payload


def hpack_get(path: str, authority: str) -> bytes:
    """A GET request's header block (RFC 7541): `:method GET` and `:scheme http` from the
    static table (indices 2 and 6), `:path` and `:authority` as literals without indexing on
    static-table names (4 and 1), no Huffman coding."""
    def literal(name_index: int, value: str) -> bytes:
        v = value.encode()
        return bytes([name_index, len(v)]) + v  # both below their 4- and 7-bit prefix limits
    return b"\x82\x86" + literal(4, path) + literal(1, authority)


H2_REQ = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(SETTINGS, 0, 0)
          + h2_frame(HEADERS, END_STREAM | END_HEADERS, 1, hpack_get("/small", "bench")))


class H2Conn:
    """The client's view of one HTTP/2 connection: frames parsed from what the server sent,
    and what the client owes it (SETTINGS and PING acknowledgements)."""

    def __init__(self):
        self.buf = b""
        self.out = b""
        self.server_settings = self.settings_acked = self.stream_done = False
        self.error = None

    def feed(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 9 and self.error is None:
            n = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + n:
                return
            ftype, flags = self.buf[3], self.buf[4]
            stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload, self.buf = self.buf[9:9 + n], self.buf[9 + n:]
            if ftype == SETTINGS:
                if flags & ACK:
                    self.settings_acked = True
                else:
                    self.server_settings = True
                    self.out += h2_frame(SETTINGS, ACK, 0)
            elif ftype == PING and not flags & ACK:
                self.out += h2_frame(PING, ACK, 0, payload)
            elif ftype == GOAWAY:
                self.error = f"GOAWAY (error code {int.from_bytes(payload[4:8], 'big')})"
            elif ftype == RST_STREAM and stream == 1:
                self.error = f"RST_STREAM (error code {int.from_bytes(payload[:4], 'big')})"
            elif ftype in (DATA, HEADERS) and stream == 1 and flags & END_STREAM:
                self.stream_done = True

    def complete(self) -> bool:
        return self.server_settings and self.settings_acked and self.stream_done


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            sys.exit(f"idleclient: RLIMIT_NOFILE hard limit {hard} < {need} needed (ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def complete(buf: bytes) -> bool | None:
    """True when buf holds a whole 200 response with its body; None when it is not a 200."""
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    lines = head.split(b"\r\n")
    if b" 200 " not in lines[0] + b" ":
        return None
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        if k.strip().lower() == b"content-length":
            return len(body) >= int(v.strip())
    return None


def tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def open_all(port: int, n: int, in_flight: int, timeout: float, tls=None,
             sni=None, h2=False) -> tuple[list, int, int, list]:
    """Open n connections (at most in_flight handshakes/requests at a time), one GET on each;
    with tls (an SSLContext), after a TLS handshake; with h2, over HTTP/2."""
    sel = selectors.DefaultSelector()
    held, errors, samples, nbytes = [], 0, [], 0
    started = 0
    deadline = time.monotonic() + timeout

    def fail(s, why):
        nonlocal errors
        errors += 1
        if len(samples) < 3 and why not in samples:
            samples.append(why)
        sel.unregister(s)
        s.close()

    while len(held) + errors < n:
        while started < n and len(sel.get_map()) < in_flight:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", port))
            started += 1
            if err not in (0, errno.EINPROGRESS):
                errors += 1
                samples.append(f"connect: {errno.errorcode.get(err, err)}")
                s.close()
                continue
            sel.register(s, selectors.EVENT_WRITE, {"buf": b""})
        if time.monotonic() > deadline:
            for key in list(sel.get_map().values()):
                fail(key.fileobj, f"no response within {timeout:.0f}s")
            break
        for key, ev in sel.select(timeout=0.5):
            s, st = key.fileobj, key.data
            if ev & selectors.EVENT_WRITE and "tls" not in st:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(s, f"connect: {errno.errorcode.get(err, err)}")
                    continue
                if tls is not None:
                    # Connected: start TLS on the same descriptor (the selector's key moves
                    # to the SSL socket).
                    sel.unregister(s)
                    s = tls.wrap_socket(s, server_hostname=sni, do_handshake_on_connect=False)
                    st["tls"] = "handshake"
                    sel.register(s, selectors.EVENT_WRITE, st)
                else:
                    st["tls"] = None
            if st.get("tls") == "handshake":
                try:
                    s.do_handshake()
                except ssl.SSLWantReadError:
                    sel.modify(s, selectors.EVENT_READ, st)
                    continue
                except ssl.SSLWantWriteError:
                    sel.modify(s, selectors.EVENT_WRITE, st)
                    continue
                except (OSError, ssl.SSLError) as e:
                    fail(s, f"handshake: {type(e).__name__}: {e}")
                    continue
                st["tls"] = "done"
            if "sent" not in st:
                if h2:
                    st["h2"] = H2Conn()
                try:
                    s.send(H2_REQ if h2 else REQ)  # a few dozen bytes into an empty send buffer: sent whole
                except OSError as e:
                    fail(s, f"send: {type(e).__name__}: {e}")
                    continue
                st["sent"] = True
                sel.modify(s, selectors.EVENT_READ, st)
                continue
            try:
                chunk = s.recv(4096)
            except ssl.SSLWantReadError:
                continue  # a record without application data (a session ticket)
            except OSError as e:
                fail(s, f"recv: {type(e).__name__}: {e}")
                continue
            if not chunk:
                fail(s, "closed before the response")
                continue
            nbytes += len(chunk)
            if h2:
                conn = st["h2"]
                conn.feed(chunk)
                if conn.out:
                    try:
                        s.send(conn.out)
                    except OSError as e:
                        fail(s, f"send: {type(e).__name__}: {e}")
                        continue
                    conn.out = b""
                if conn.error:
                    fail(s, conn.error)
                elif conn.complete():
                    sel.unregister(s)
                    held.append(s)
                continue
            st["buf"] += chunk
            done = complete(st["buf"])
            if done is None:
                fail(s, f"bad response: {st['buf'][:60]!r}")
            elif done:
                sel.unregister(s)
                held.append(s)
    sel.close()
    return held, errors, nbytes, samples


def still_open(socks: list, h2=False) -> int:
    """Connections with nothing to read and no EOF: still open and idle. With h2, frames
    that arrived meanwhile are read: a GOAWAY counts the connection as closed."""
    if h2:
        alive = 0
        for s in socks:
            conn, closed = H2Conn(), False
            while True:
                try:
                    chunk = s.recv(65536, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                except OSError:
                    closed = True
                    break
                if not chunk:
                    closed = True
                    break
                conn.feed(chunk)
            alive += not closed and conn.error is None
        return alive
    if socks and isinstance(socks[0], ssl.SSLSocket):
        # An SSL socket cannot peek: a closed one has the peer's FIN (after its close_notify).
        poll = select.poll()
        for s in socks:
            poll.register(s.fileno(), select.POLLRDHUP)
        gone = {fd for fd, ev in poll.poll(0) if ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR)}
        return sum(1 for s in socks if s.fileno() not in gone)
    alive = 0
    for s in socks:
        try:
            if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                continue  # closed by the proxy
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--in-flight", type=int, default=100, help="handshakes/requests at a time")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to open all of them")
    ap.add_argument("--tls", action="store_true", help="TLS 1.3 first (certificate not checked)")
    ap.add_argument("--sni", default="bench.example.com", help="server name sent with --tls")
    ap.add_argument("--h2", action="store_true", help="HTTP/2 with prior knowledge (cleartext)")
    a = ap.parse_args()
    raise_nofile(a.connections + 64)
    t0 = time.monotonic()
    held, errors, nbytes, samples = open_all(a.port, a.connections, a.in_flight, a.timeout,
                                             tls_context() if a.tls else None, a.sni, a.h2)
    print("OPEN " + json.dumps({"held": len(held), "errors": errors, "open_s": time.monotonic() - t0}),
          flush=True)
    sys.stdin.readline()
    alive = still_open(held, a.h2)
    for s in held:
        s.close()
    print("BENCHJSON " + json.dumps({
        "held": len(held), "alive": alive, "errors": errors, "bytes": nbytes,
        "error_samples": samples, "open_s": time.monotonic() - t0}), flush=True)


if __name__ == "__main__":
    main()
