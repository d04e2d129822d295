#!/usr/bin/env python3
"""Idle-connection client: opens N keep-alive connections, one GET each, then holds them idle.

Every connection sends one keep-alive `GET /small` and reads the whole response, so each proxy
has set up both sides of the relay and moved bytes both ways. Once all are done it prints
`OPEN {json}` and holds the connections, idle, until a line (or EOF) arrives on stdin; then it
checks that none was closed meanwhile, closes them all and prints one `BENCHJSON {json}` line.

With --tls every connection first completes a TLS 1.3 handshake (Python's ssl, OpenSSL; the
certificate is not checked; --sni names the server), then sends the GET inside TLS: the idle
connections are TLS sessions at rest (the session tickets the server sent were read too).
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
             sni=None) -> tuple[list, int, int, list]:
    """Open n connections (at most in_flight handshakes/requests at a time), one GET on each;
    with tls (an SSLContext), after a TLS handshake."""
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
                try:
                    s.send(REQ)  # a few dozen bytes into an empty send buffer: sent whole
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
            st["buf"] += chunk
            done = complete(st["buf"])
            if done is None:
                fail(s, f"bad response: {st['buf'][:60]!r}")
            elif done:
                sel.unregister(s)
                held.append(s)
    sel.close()
    return held, errors, nbytes, samples


def still_open(socks: list) -> int:
    """Connections with nothing to read and no EOF: still open and idle."""
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
    a = ap.parse_args()
    raise_nofile(a.connections + 64)
    t0 = time.monotonic()
    held, errors, nbytes, samples = open_all(a.port, a.connections, a.in_flight, a.timeout,
                                             tls_context() if a.tls else None, a.sni)
    print("OPEN " + json.dumps({"held": len(held), "errors": errors, "open_s": time.monotonic() - t0}),
          flush=True)
    sys.stdin.readline()
    alive = still_open(held)
    for s in held:
        s.close()
    print("BENCHJSON " + json.dumps({
        "held": len(held), "alive": alive, "errors": errors, "bytes": nbytes,
        "error_samples": samples, "open_s": time.monotonic() - t0}), flush=True)


if __name__ == "__main__":
    main()
