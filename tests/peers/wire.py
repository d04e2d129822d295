"""Test peer library: raw-socket HTTP/1.1 client for the corpus drivers (differential, smuggling).

Sends exact bytes (malformed ones included) and reads responses strictly by their framing, so
a driver can tell a correct answer, a closed connection, a hang and a desynchronised stream
apart. Only the standard library.
"""
from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field

READ_TIMEOUT = 5.0
MAX_HEAD = 1 << 20


class Closed(Exception):
    """The server closed (or reset) the connection before a whole response arrived."""

    def __init__(self, how: str):
        super().__init__(how)
        self.how = how


class Hang(Exception):
    """Nothing (more) arrived within the read timeout."""


@dataclass
class Response:
    status: int
    version: str
    headers: list[tuple[str, str]]  # names lower-cased, values as sent, in order
    body: bytes
    trailers: list[tuple[str, str]] = field(default_factory=list)
    interim: list[int] = field(default_factory=list)  # 1xx statuses seen before this one

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def echo(self) -> dict | None:
        """The upstream's JSON description of the request, when this response carries one."""
        if not (self.header("content-type") or "").startswith("application/json"):
            return None
        try:
            doc = json.loads(self.body)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) and "upstream" in doc else None


class Conn:
    """One client connection; responses are read one at a time in order."""

    def __init__(self, port: int, timeout: float = READ_TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.eof = False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes) -> bool:
        """Writes all of `data`; False when the server already closed or reset."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _fill(self) -> None:
        if self.eof:
            raise Closed("eof")
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            raise Hang() from None
        except ConnectionResetError:
            self.eof = True
            raise Closed("reset") from None
        if not data:
            self.eof = True
            raise Closed("eof")
        self.buf += data

    def _take_line(self) -> bytes:
        while b"\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise ValueError("response line too long")
            self._fill()
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r")

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _headers(self) -> list[tuple[str, str]]:
        out = []
        while True:
            line = self._take_line()
            if not line:
                return out
            k, _, v = line.partition(b":")
            out.append((k.decode("latin-1").strip().lower(), v.decode("latin-1").strip()))

    def read_response(self, method: str = "GET") -> Response:
        """Reads the next final response (1xx are collected into `interim`).

        Raises Closed when the connection ends first, Hang when it stalls.
        """
        interim = []
        while True:
            line = self._take_line()
            parts = line.decode("latin-1").split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise ValueError(f"bad status line {line!r}")
            status = int(parts[1])
            headers = self._headers()
            if 100 <= status < 200 and status != 101:
                interim.append(status)
                continue
            break
        resp = Response(status, parts[0], headers, b"", interim=interim)
        if method == "HEAD" or status in (101, 204, 304):
            return resp
        te = (resp.header("transfer-encoding") or "").lower()
        cl = resp.header("content-length")
        if te == "chunked":
            body = b""
            while True:
                size = int(self._take_line().split(b";")[0].strip(), 16)
                if size == 0:
                    resp.trailers = self._headers()
                    break
                body += self._take(size)
                self._take_line()
            resp.body = body
        elif cl is not None:
            resp.body = self._take(int(cl))
        else:
            while True:
                try:
                    self._fill()
                except Closed:
                    break
            resp.body, self.buf = self.buf, b""
        return resp


def request(method: str, target: str, headers: list[tuple[str, str]] | None = None,
            body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    """Serialises a well-formed request; Content-Length is added for a non-empty body."""
    out = f"{method} {target} {version}\r\n"
    headers = list(headers or [])
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
        headers.append(("content-length", str(len(body))))
    for k, v in headers:
        out += f"{k}: {v}\r\n"
    return out.encode("latin-1") + b"\r\n" + body
