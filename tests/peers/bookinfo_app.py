#!/usr/bin/env python3
"""Test peer: BookInfo's services as small HTTP apps (tests/bookinfo.rs), standard library only.

    bookinfo_app.py serve SERVICE VERSION PORT [NAME=HOST:PORT]...
        Serves SERVICE (productpage, details, reviews or ratings) of VERSION on 0.0.0.0:PORT
        as BookInfo's apps behave, each answer JSON naming the service and version that
        served it and the request headers it got that BookInfo propagates ("seen"):
          productpage  GET /productpage?product=N: calls details /details/N, then reviews
                       /reviews/N, and answers both results ({"status", "body"} each). The
                       user is the `user` cookie (BookInfo's login), else the `end-user`
                       header; it goes upstream as `end-user`.
          details      GET /details/N: the book's details.
          reviews      GET /reviews/N: v1 has no ratings; v2 (black stars) and v3 (red) call
                       ratings /ratings/N and answer its result and how long it took.
          ratings      GET /ratings/N: two reviewers' stars.
        Upstream NAME (details, reviews, ratings) is reached at HOST:PORT with the
        `Host: NAME:PORT` a Kubernetes service name gives. Every call forwards the tracing
        headers and the user's as BookInfo's apps do. Prints `READY` once listening, then
        serves until killed.

    bookinfo_app.py get URL COUNT [NAME:VALUE]...
        GETs URL COUNT times (one keep-alive connection, re-opened when the server closes it)
        with the given headers and prints a JSON list of {"status", "elapsed_ms", "body"}
        (the body parsed as JSON when it is, else text); a failed request is
        {"error": "..."}. Each request is bounded by a 10 s timeout.
"""
from __future__ import annotations

import argparse
import http.client
import http.server
import json
import sys
import time
import urllib.parse

from json_http import reply_json

TIMEOUT = 10

# What BookInfo's productpage forwards (its `incoming_headers` and B3), and the user.
PROPAGATED = (
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "traceparent",
    "tracestate",
    "x-ot-span-context",
    "x-cloud-trace-context",
    "user-agent",
    "cookie",
    "authorization",
    "end-user",
)


def user_of(headers) -> str | None:
    """The logged-in user: BookInfo's `user` cookie, else an `end-user` header."""
    for part in (headers.get("cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == "user" and value:
            return value
    return headers.get("end-user")


def forwarded(headers) -> dict[str, str]:
    """The headers a call upstream carries: the propagated ones, the user as `end-user`."""
    out = {k: headers[k] for k in PROPAGATED if headers.get(k) is not None}
    user = user_of(headers)
    if user:
        out["end-user"] = user
    return out


class App:
    def __init__(self, service: str, version: str, upstreams: dict[str, tuple[str, int]]):
        self.service, self.version, self.upstreams = service, version, upstreams

    def call(self, name: str, path: str, headers) -> dict:
        """GET `path` from upstream `name`: {"status", "body", "elapsed_ms"} or {"error"}."""
        host, port = self.upstreams[name]
        start = time.monotonic()
        conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
        try:
            conn.request("GET", path, headers={"Host": f"{name}:{port}", **forwarded(headers)})
            resp = conn.getresponse()
            raw = resp.read().decode(errors="replace")
            result = {"status": resp.status, "body": parse(raw)}
        except OSError as e:
            result = {"error": f"{type(e).__name__}: {e}"}
        finally:
            conn.close()
        result["elapsed_ms"] = round((time.monotonic() - start) * 1000)
        return result

    def answer(self, path: str, headers) -> tuple[int, dict]:
        route = urllib.parse.urlsplit(path)
        parts = route.path.strip("/").split("/")
        body = {
            "service": self.service,
            "version": self.version,
            "seen": {k: headers[k] for k in PROPAGATED if headers.get(k) is not None},
        }
        if self.service == "productpage" and route.path == "/productpage":
            query = urllib.parse.parse_qs(route.query)
            product = query.get("product", ["0"])[0]
            body["user"] = user_of(headers)
            body["details"] = self.call("details", f"/details/{product}", headers)
            body["reviews"] = self.call("reviews", f"/reviews/{product}", headers)
            return 200, body
        if len(parts) != 2 or parts[0] != self.service:
            return 404, {**body, "error": f"no route {path}"}
        product = parts[1]
        body["id"] = product
        if self.service == "details":
            body.update(author="William Shakespeare", year=1595, type="paperback")
        elif self.service == "ratings":
            body["ratings"] = {"Reviewer1": 5, "Reviewer2": 4}
        elif self.service == "reviews":
            body["reviews"] = ["An extremely entertaining play", "Absolutely fun"]
            if self.version != "v1":
                body["stars"] = "black" if self.version == "v2" else "red"
                body["ratings"] = self.call("ratings", f"/ratings/{product}", headers)
        return 200, body


def parse(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def handler(app: App):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            reply_json(self, *app.answer(self.path, self.headers))

        def log_message(self, *args):
            pass

    return Handler


def serve(service: str, version: str, port: int, upstreams: list[str]) -> None:
    targets = {}
    for spec in upstreams:
        name, _, where = spec.partition("=")
        host, _, upstream_port = where.rpartition(":")
        targets[name] = (host, int(upstream_port))
    server = http.server.ThreadingHTTPServer(
        ("0.0.0.0", port), handler(App(service, version, targets))
    )
    server.daemon_threads = True
    print("READY", flush=True)
    server.serve_forever()


def get(url: str, count: int, header_specs: list[str]) -> list[dict]:
    parts = urllib.parse.urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = dict(h.split(":", 1) for h in header_specs)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    results, conn = [], None
    for _ in range(count):
        start = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            raw = resp.read().decode(errors="replace")
            result = {"status": resp.status, "body": parse(raw)}
            if resp.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            result = {"error": f"{type(e).__name__}: {e}"}
            if conn is not None:
                conn.close()
                conn = None
        result["elapsed_ms"] = round((time.monotonic() - start) * 1000)
        results.append(result)
    if conn is not None:
        conn.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve")
    serving.add_argument("service", choices=["productpage", "details", "reviews", "ratings"])
    serving.add_argument("version")
    serving.add_argument("port", type=int)
    serving.add_argument("upstreams", nargs="*", metavar="NAME=HOST:PORT")
    getting = commands.add_parser("get")
    getting.add_argument("url")
    getting.add_argument("count", type=int)
    getting.add_argument("headers", nargs="*", metavar="NAME:VALUE")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.service, args.version, args.port, args.upstreams)
    else:
        print(json.dumps(get(args.url, args.count, args.headers)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
