"""Test peer library: JSON answers of the peers' HTTP servers (the pod apps of the mesh tests,
the control plane's control endpoints). Only the standard library."""
from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler


def reply_json(handler: BaseHTTPRequestHandler, status: int, body) -> None:
    """Answers `handler`'s request with `status` and `body` as JSON (a length-framed
    HTTP/1.1 response, so the connection may be kept)."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
