#!/usr/bin/env python3
"""Test peer: a Zipkin collector that records the spans proxies report.

    zipkin_collector.py

listens on 127.0.0.1 (kernel-chosen port) and prints `READY <port>`; it exits when its stdin
closes. `POST <any path>` with a Zipkin v2 JSON list of spans is answered 202 and its spans
are kept, each with the request's path, host and content-type under `_report`. `GET /spans`
answers every span kept so far as one JSON list, in arrival order; `GET /reports` answers how
many POSTs came.
"""
from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SPANS: list[dict] = []
REPORTS = [0]
LOCK = threading.Lock()


class Collector(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.read_body()
        report = {
            "path": self.path,
            "host": self.headers.get("host"),
            "content_type": self.headers.get("content-type"),
            "chunked": "transfer-encoding" in self.headers,
        }
        try:
            spans = json.loads(body)
        except ValueError:
            self.answer(400, b"not JSON")
            return
        with LOCK:
            REPORTS[0] += 1
            for span in spans:
                span["_report"] = report
                SPANS.append(span)
        self.answer(202, b"")

    def read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("content-length", "0")))
        body = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0], 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass
                return body
            body += self.rfile.read(size)
            self.rfile.readline()

    def do_GET(self) -> None:
        with LOCK:
            if self.path == "/spans":
                body = json.dumps(SPANS).encode()
            elif self.path == "/reports":
                body = json.dumps(REPORTS[0]).encode()
            else:
                self.answer(404, b"")
                return
        self.answer(200, body)

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"READY {server.server_address[1]}", flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
