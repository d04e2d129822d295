#!/usr/bin/env python3
"""Test peer: Istio's TCP metadata exchange (ALPN `istio-peer-exchange`), written from the
protocol's description with Python's protobuf, to check shardproxy's frames independently.

A frame is: magic 0x3D230467 and the payload's length (both 32-bit big-endian), then the
payload: a serialized google.protobuf.Any whose type is google.protobuf.Struct, holding
{"x-envoy-peer-metadata": <node metadata struct>, "x-envoy-peer-metadata-id": <node id>}.

    istio_mx.py server --cert C --key K --metadata JSON --id ID --record FILE [--garbage]
        TLS with ALPN istio-peer-exchange; per connection: write our frame (--garbage: 12 bytes
        that are not a frame), read the peer's, append it to FILE as a JSON line
        ({"type_url", "id", "metadata"} or {"error"}), then echo bytes.
    istio_mx.py client --port P --ca CA --metadata JSON --id ID --send TEXT [--garbage]
        connect (SNI localhost), exchange as above, print `PEER <json>`, send TEXT, print
        `ECHO <text>` (what came back before TEXT's length or the close). --garbage sends 12
        bytes that are not a frame instead of ours (and then waits for them back too).

    istio_mx.py headers --node JSON
        print the HTTP exchange's two headers for that bootstrap `node` as Istio's
        `io.istio.http.peer_metadata` propagates them: JSON {"x-envoy-peer-metadata": base64 of
        the serialized Struct of the node metadata keys Istio exchanges,
        "x-envoy-peer-metadata-id": the node id}.
    istio_mx.py decode VALUE
        print the node metadata in an `x-envoy-peer-metadata` value (base64, padded or not)
        as JSON.

Servers print `READY <port>` once listening, and serve until standard input closes.
"""
from __future__ import annotations

import argparse
import base64
import json
import socket
import ssl
import struct
import sys
import threading

from google.protobuf import any_pb2, json_format, struct_pb2

MAGIC = 0x3D230467
ALPN = "istio-peer-exchange"
# What --garbage sends instead of a frame.
GARBAGE = b"\x00\x00\x00\x00garbage!"
# The node metadata keys Istio's exchange carries (its node schema); the others (proxy config,
# agent settings) stay home.
EXCHANGED = ("NAME", "NAMESPACE", "OWNER", "WORKLOAD_NAME", "ISTIO_VERSION", "MESH_ID",
             "CLUSTER_ID", "LABELS", "PLATFORM_METADATA", "APP_CONTAINERS", "INSTANCE_IPS")


def frame(metadata: dict, node_id: str) -> bytes:
    both = struct_pb2.Struct()
    both.update({"x-envoy-peer-metadata": metadata, "x-envoy-peer-metadata-id": node_id})
    payload = any_pb2.Any(type_url="type.googleapis.com/google.protobuf.Struct",
                          value=both.SerializeToString()).SerializeToString()
    return struct.pack(">II", MAGIC, len(payload)) + payload


def headers(node: dict) -> dict:
    metadata = struct_pb2.Struct()
    metadata.update({k: v for k, v in node.get("metadata", {}).items() if k in EXCHANGED})
    value = base64.b64encode(metadata.SerializeToString(deterministic=True)).decode()
    return {"x-envoy-peer-metadata": value, "x-envoy-peer-metadata-id": node.get("id", "")}


def decode(value: str) -> dict:
    metadata = struct_pb2.Struct()
    metadata.ParseFromString(base64.b64decode(value + "=" * (-len(value) % 4)))
    return json_format.MessageToDict(metadata)


def read_exact(sock, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def read_frame(sock) -> dict:
    magic, length = struct.unpack(">II", read_exact(sock, 8))
    if magic != MAGIC:
        return {"error": f"bad magic {magic:#x}"}
    any_msg = any_pb2.Any()
    any_msg.ParseFromString(read_exact(sock, length))
    both = struct_pb2.Struct()
    both.ParseFromString(any_msg.value)
    fields = json_format.MessageToDict(both)
    return {"type_url": any_msg.type_url, "id": fields.get("x-envoy-peer-metadata-id"),
            "metadata": fields.get("x-envoy-peer-metadata")}


def listen() -> socket.socket:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    return srv


def echo(sock) -> None:
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            sock.sendall(data)
    except OSError:
        return
    finally:
        sock.close()


def serve(srv: socket.socket, handle) -> None:
    def loop():
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    print(f"READY {srv.getsockname()[1]}", flush=True)
    sys.stdin.read()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["server", "client", "headers", "decode"])
    ap.add_argument("value", nargs="?", default="")
    ap.add_argument("--node", default="{}")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--ca")
    ap.add_argument("--port", type=int)
    ap.add_argument("--metadata", default="{}")
    ap.add_argument("--id", default="")
    ap.add_argument("--send", default="")
    ap.add_argument("--garbage", action="store_true")
    ap.add_argument("--record")
    args = ap.parse_args()
    if args.mode == "headers":
        print(json.dumps(headers(json.loads(args.node))))
        return
    if args.mode == "decode":
        print(json.dumps(decode(args.value)))
        return
    ours = frame(json.loads(args.metadata), args.id)

    if args.mode == "server":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        ctx.set_alpn_protocols([ALPN])

        lock = threading.Lock()

        def record(peer: dict) -> None:
            with lock, open(args.record, "a") as f:
                f.write(json.dumps(peer) + "\n")

        def handle(raw):
            try:
                sock = ctx.wrap_socket(raw, server_side=True)
                sock.sendall(GARBAGE if args.garbage else ours)
                peer = read_frame(sock)
            except (OSError, EOFError, ssl.SSLError) as e:
                record({"error": str(e)})
                raw.close()
                return
            record(peer)
            echo(sock)

        serve(listen(), handle)
    else:
        ctx = ssl.create_default_context(cafile=args.ca)
        ctx.set_alpn_protocols([ALPN])
        sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", args.port)),
                               server_hostname="localhost")
        first = GARBAGE if args.garbage else ours
        sock.sendall(first)
        try:
            peer = read_frame(sock)
        except (OSError, EOFError) as e:
            peer = {"error": str(e)}
        print(f"PEER {json.dumps(peer)}", flush=True)
        # What comes back through an echo: the garbage too, when the peer relays it.
        expected = len(args.send) + (len(GARBAGE) if args.garbage else 0)
        received = b""
        try:
            sock.sendall(args.send.encode())
            while len(received) < expected:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except OSError:
            pass
        print(f"ECHO {received.decode(errors='replace')}", flush=True)


if __name__ == "__main__":
    main()
