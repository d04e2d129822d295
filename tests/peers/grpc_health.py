#!/usr/bin/env python3
"""Test peer: a gRPC server whose `grpc.health.v1.Health/Check` answers a fixed status.

On grpcio with a generic handler (no generated code): the request's `service` field is read
from the raw protobuf bytes; the answer is `HealthCheckResponse { status }` encoded by hand
(field 1, varint). `--status` applies to every service, `--service NAME=STATUS` to one.

    grpc_health.py --port 0 --status SERVING [--service NAME=NOT_SERVING ...] [--stdin-eof]

Prints `READY <port>` once listening; with --stdin-eof exits when stdin closes. Every Check
call is counted; the count is printed to stderr at exit.
"""
from __future__ import annotations

import argparse
import sys
import threading
from concurrent import futures

import grpc

STATUSES = {"UNKNOWN": 0, "SERVING": 1, "NOT_SERVING": 2, "SERVICE_UNKNOWN": 3}
calls = 0
lock = threading.Lock()


def service_name(request: bytes) -> str:
    """Field 1 (string) of a HealthCheckRequest, or "" when absent."""
    if len(request) >= 2 and request[0] == 0x0A:
        length, at = 0, 1
        shift = 0
        while True:
            byte = request[at]
            length |= (byte & 0x7F) << shift
            at += 1
            if not byte & 0x80:
                break
            shift += 7
        return request[at : at + length].decode()
    return ""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--status", default="SERVING", choices=STATUSES)
    parser.add_argument("--service", action="append", default=[], help="NAME=STATUS")
    parser.add_argument("--stdin-eof", action="store_true")
    args = parser.parse_args()
    per_service = dict(s.split("=", 1) for s in args.service)

    def check(request: bytes, context) -> bytes:
        global calls
        with lock:
            calls += 1
        name = service_name(request)
        status = per_service.get(name, args.status)
        return bytes([0x08, STATUSES[status]]) if STATUSES[status] else b""

    identity = lambda b: b  # noqa: E731
    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {"Check": grpc.unary_unary_rpc_method_handler(check, identity, identity)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=(handler,))
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"READY {port}", flush=True)
    try:
        if args.stdin_eof:
            sys.stdin.read()
        else:
            server.wait_for_termination()
    except KeyboardInterrupt:
        pass
    server.stop(0)
    print(f"checks {calls}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
