#!/usr/bin/env python3
"""Test peer: an external authorization server (`envoy.service.auth.v3.Authorization/Check`,
grpcio with the messages xds-protos ships) that decides by the checked request and records
every CheckRequest it gets, for a test to assert on what a proxy sent.

    ext_authz_server.py --port 0 --log PATH [--deny-ports P,Q] [--stdin-eof]

Prints `READY <port>` once listening. Each CheckRequest is appended to PATH as one JSON line
(proto3 JSON with the proto's field names; a `raw_body` is base64 there), with the gRPC
metadata the call carried under `"metadata"`.

HTTP checks are decided by the request's path:
    /deny...      denied: status from `x-deny-status` (none: no DeniedHttpResponse status, so
                  the proxy's default 403), body `denied by authz`, headers `x-denied: yes` and
                  two `set-cookie`s
    /error...     the call fails with UNAVAILABLE
    /slow...      waits `x-sleep-ms` milliseconds (default 2000), then allows
    /status...    answers gRPC status OK but a `status` of PERMISSION_DENIED (7) with no
                  denied response
    anything else allowed: upstream headers `x-authz: ok` (overwriting), `x-authz-append: a`
                  (appended where present), `x-authz-new: 1` (appended: added only where
                  present), `x-remove-me` removed, response header `x-authz-response: yes`;
                  with an `x-user` header, dynamic metadata `{"user": <its value>}`
Network (TCP) checks, which carry no HTTP request, are denied when the destination port is in
`--deny-ports`, else allowed.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2


def header(key: str, value: str, append: bool | None = None) -> base_pb2.HeaderValueOption:
    option = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value))
    if append is not None:
        option.append.value = append
    return option


class Authorization(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, log: str, deny_ports: set[int]):
        self.log = log
        self.deny_ports = deny_ports
        self.lock = threading.Lock()

    def record(self, request, context) -> None:
        entry = json_format.MessageToDict(request, preserving_proto_field_name=True)
        entry["metadata"] = {k: v for k, v in context.invocation_metadata()}
        with self.lock, open(self.log, "a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")

    def Check(self, request, context):
        self.record(request, context)
        attributes = request.attributes
        if not attributes.request.HasField("http"):
            port = attributes.destination.address.socket_address.port_value
            code = code_pb2.PERMISSION_DENIED if port in self.deny_ports else code_pb2.OK
            return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code))
        http = attributes.request.http
        path = http.path
        if path.startswith("/error"):
            context.abort(grpc.StatusCode.UNAVAILABLE, "authorization backend down")
        if path.startswith("/slow"):
            time.sleep(int(http.headers.get("x-sleep-ms", "2000")) / 1000)
        if path.startswith("/status"):
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED))
        if path.startswith("/deny"):
            denied = external_auth_pb2.DeniedHttpResponse(
                headers=[
                    header("x-denied", "yes"),
                    header("set-cookie", "a=1"),
                    header("set-cookie", "b=2"),
                ],
                body="denied by authz",
            )
            if "x-deny-status" in http.headers:
                denied.status.CopyFrom(
                    http_status_pb2.HttpStatus(code=int(http.headers["x-deny-status"])))
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
                denied_response=denied,
            )
        ok = external_auth_pb2.OkHttpResponse(
            headers=[
                header("x-authz", "ok"),
                header("x-authz-append", "a", append=True),
                header("x-authz-new", "1", append=True),
            ],
            headers_to_remove=["x-remove-me"],
            response_headers_to_add=[header("x-authz-response", "yes")],
        )
        response = external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK), ok_response=ok)
        if "x-user" in http.headers:
            response.dynamic_metadata.update({"user": http.headers["x-user"]})
        return response


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", required=True)
    parser.add_argument("--deny-ports", default="")
    parser.add_argument("--stdin-eof", action="store_true", help="exit when stdin closes")
    args = parser.parse_args()
    deny_ports = {int(p) for p in args.deny_ports.split(",") if p}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        Authorization(args.log, deny_ports), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    if port == 0:
        print(f"ext_authz_server: cannot listen on port {args.port}", file=sys.stderr)
        return 1
    server.start()
    print(f"READY {port}", flush=True)
    if args.stdin_eof:
        sys.stdin.read()
        server.stop(0)
    else:
        server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
