#!/usr/bin/env python3
"""Test peer: a pod's application in the mesh test (tests/mesh.rs), standard library only.

    mesh_app.py serve --http PORT --tcp PORT
        An HTTP server on 0.0.0.0:--http answering every GET with JSON
        {"headers": [[name, value], ...] as received, "from": the peer's address,
         "path": the request path}, and a TCP server on 0.0.0.0:--tcp that echoes each
        connection's bytes back until the peer closes. Prints `READY` once both listen, then
        serves until killed.

    mesh_app.py tcp HOST PORT MESSAGE
        Connects to HOST:PORT, sends MESSAGE, closes its side, reads until EOF (bounded by a
        10 s timeout) and prints JSON {"echo": what came back} or {"error": "..."}.
"""
from __future__ import annotations

import http.server
import json
import socket
import socketserver
import sys
import threading

from json_http import reply_json

TIMEOUT = 10


class Echo(http.server.BaseHTTPRequestHandler):
    """Names the request headers it received and where the connection came from."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        reply_json(self, 200, {
            "headers": [[k, v] for k, v in self.headers.items()],
            "from": self.client_address[0],
            "path": self.path,
        })

    def log_message(self, *args):
        pass


class TcpEcho(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(TIMEOUT)
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass


class Threading(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(http_port: int, tcp_port: int) -> None:
    web = http.server.ThreadingHTTPServer(("0.0.0.0", http_port), Echo)
    web.daemon_threads = True
    tcp = Threading(("0.0.0.0", tcp_port), TcpEcho)
    for server in (web, tcp):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("READY", flush=True)
    threading.Event().wait()


def tcp_send(host: str, port: int, message: str) -> dict:
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT) as s:
            s.sendall(message.encode())
            s.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := s.recv(65536):
                received += chunk
        return {"echo": received.decode(errors="replace")}
    except OSError as e:
        return {"error": f"{type(e).__name__}: {e}"}


def main() -> int:
    args = sys.argv[1:]
    if len(args) == 5 and args[0] == "serve" and args[1] == "--http" and args[3] == "--tcp":
        serve(int(args[2]), int(args[4]))
    elif len(args) == 4 and args[0] == "tcp":
        print(json.dumps(tcp_send(args[1], int(args[2]), args[3])))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
