#!/usr/bin/env python3
"""Test driver: the differential corpus — one route configuration, run by Envoy and shardproxy.

`bootstrap` prints the bootstrap both proxies run: one HTTP connection manager whose inline
route_config exercises the route features of issue 3 (domains, path/header/query matchers,
weighted and header-named clusters, rewrites, redirects, direct responses, header mutations at
all three levels, retries, timeouts), in front of the echo upstream (upstream.py), so every
rewrite and added header is visible in the response body.

`run` sends the corpus (route cases and malformed raw inputs) to each proxy. Every response is
normalised (see `normalise`: what is compared, what is only checked for presence, what is
dropped) and then:
  * Envoy's must meet each case's expectations (the corpus tests what its name says);
  * every other proxy's must equal Envoy's, except where a named exception in EXCEPTIONS
    says how and why they differ (docs/http-differences.md lists the same exceptions).

    differential.py bootstrap --listen-port P --admin-port A --upstream NAME=PORT ... --dead-port D
    differential.py run --target envoy=PORT [--target shardproxy=PORT]
    differential.py exceptions | table   # the Markdown docs/http-differences.md carries
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import smuggling
from wire import Closed, Conn, Hang, Response, request

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
UPSTREAMS = ("alpha", "beta", "gamma")
SERVER_NAME = "differential-proxy"
CASE_TIMEOUT = 8.0

# ---------------------------------------------------------------------------------------------
# The configuration under test


def hdr(key: str, value: str, action: str | None = None, **extra) -> dict:
    out = {"header": {"key": key, "value": value}, **extra}
    if action:
        out["append_action"] = action
    return out


def echo_route(cluster: str, **action) -> dict:
    return {"cluster": cluster, **action}


def direct(status: int, body: str | None = None) -> dict:
    out = {"status": status}
    if body is not None:
        out["body"] = {"inline_string": body}
    return out


RETRY = {"retry_on": "5xx,reset,connect-failure", "num_retries": 2}

ROUTES_VHOST_ROUTES = [
    # path matchers
    {"match": {"path": "/exact"}, "route": echo_route("alpha"),
     "request_headers_to_add": [hdr("x-route", "exact")]},
    {"match": {"path": "/ci-path", "case_sensitive": False}, "route": echo_route("beta")},
    {"match": {"prefix": "/CI/", "case_sensitive": False}, "route": echo_route("gamma")},
    {"match": {"safe_regex": {"regex": "^/regex/[0-9]+$"}}, "route": echo_route("gamma")},
    {"match": {"path_separated_prefix": "/sep"}, "route": echo_route("beta")},
    # header matchers (first match wins)
    {"match": {"prefix": "/hdr", "headers": [
        {"name": "x-env", "string_match": {"exact": "prod"}}]}, "route": echo_route("alpha")},
    {"match": {"prefix": "/hdr", "headers": [
        {"name": "x-env", "string_match": {"exact": "LOUD", "ignore_case": True}}]},
     "route": echo_route("alpha"), "request_headers_to_add": [hdr("x-matched", "ignore-case")]},
    {"match": {"prefix": "/hdr", "headers": [
        {"name": "x-env", "string_match": {"prefix": "stag"}}]}, "route": echo_route("beta")},
    {"match": {"prefix": "/hdr", "headers": [
        {"name": "x-env", "string_match": {"suffix": "-dev"}}]}, "route": echo_route("gamma")},
    {"match": {"prefix": "/hdr", "headers": [
        {"name": "x-env", "string_match": {"contains": "canary"}}]},
     "route": echo_route("alpha"), "request_headers_to_add": [hdr("x-matched", "contains")]},
    {"match": {"prefix": "/hdr", "headers": [
        {"name": "x-env", "string_match": {"safe_regex": {"regex": "^v[0-9]+$"}}}]},
     "route": echo_route("beta"), "request_headers_to_add": [hdr("x-matched", "regex")]},
    {"match": {"prefix": "/hdr", "headers": [{"name": "x-flag", "present_match": True}]},
     "route": echo_route("gamma"), "request_headers_to_add": [hdr("x-matched", "present")]},
    {"match": {"prefix": "/hdr", "headers": [
        {"name": "x-a", "string_match": {"exact": "1"}},
        {"name": "x-b", "string_match": {"exact": "2"}}]},
     "route": echo_route("beta"), "request_headers_to_add": [hdr("x-matched", "both")]},
    {"match": {"prefix": "/inv", "headers": [
        {"name": "x-block", "string_match": {"exact": "yes"}, "invert_match": True}]},
     "route": echo_route("alpha")},
    {"match": {"prefix": "/inv"}, "direct_response": direct(403, "blocked\n")},
    {"match": {"prefix": "/method", "headers": [
        {"name": ":method", "string_match": {"exact": "POST"}}]}, "route": echo_route("beta")},
    # query parameter matchers
    {"match": {"prefix": "/query", "query_parameters": [
        {"name": "q", "string_match": {"exact": "1"}}]}, "route": echo_route("alpha")},
    {"match": {"prefix": "/query", "query_parameters": [
        {"name": "debug", "present_match": True}]}, "route": echo_route("beta")},
    {"match": {"prefix": "/query", "query_parameters": [
        {"name": "v", "string_match": {"prefix": "abc"}}]}, "route": echo_route("gamma")},
    # cluster choice
    {"match": {"prefix": "/weighted"}, "route": {"weighted_clusters": {"clusters": [
        {"name": "alpha", "weight": 0},
        {"name": "beta", "weight": 100, "request_headers_to_add": [hdr("x-weighted", "beta")],
         "response_headers_to_add": [hdr("x-weighted-resp", "beta")]},
    ]}}},
    {"match": {"prefix": "/by-header"}, "route": {"cluster_header": "x-target-cluster"}},
    # rewrites
    {"match": {"prefix": "/old/"}, "route": echo_route("alpha", prefix_rewrite="/new/")},
    {"match": {"prefix": "/strip"}, "route": echo_route("alpha", prefix_rewrite="/")},
    {"match": {"prefix": "/rx/"}, "route": echo_route("alpha", regex_rewrite={
        "pattern": {"regex": "^/rx/([^/]+)/([^/]+)$"}, "substitution": "/swapped/\\2/\\1"})},
    {"match": {"prefix": "/host-literal"},
     "route": echo_route("alpha", host_rewrite_literal="rewritten.test")},
    {"match": {"prefix": "/host-auto"}, "route": echo_route("named", auto_host_rewrite=True)},
    # redirects
    {"match": {"path": "/redir/https"}, "redirect": {"https_redirect": True}},
    {"match": {"path": "/redir/host"},
     "redirect": {"host_redirect": "other.test", "response_code": "FOUND"}},
    {"match": {"path": "/redir/path"}, "redirect": {
        "path_redirect": "/elsewhere", "strip_query": True, "response_code": "SEE_OTHER"}},
    {"match": {"prefix": "/redir/prefix/"}, "redirect": {
        "prefix_rewrite": "/moved/", "response_code": "TEMPORARY_REDIRECT"}},
    {"match": {"path": "/redir/port"},
     "redirect": {"port_redirect": 8443, "response_code": "PERMANENT_REDIRECT"}},
    {"match": {"path": "/redir/scheme"},
     "redirect": {"scheme_redirect": "https", "host_redirect": "secure.test"}},
    {"match": {"prefix": "/redir/rx/"}, "redirect": {"regex_rewrite": {
        "pattern": {"regex": "^/redir/rx/(.*)$"}, "substitution": "/re/\\1"}}},
    # direct responses
    {"match": {"path": "/direct/ok"}, "direct_response": direct(200, "direct ok\n"),
     "response_headers_to_add": [hdr("x-direct", "yes")]},
    {"match": {"path": "/direct/empty"}, "direct_response": direct(503)},
    {"match": {"path": "/direct/teapot"}, "direct_response": direct(418, "short and stout\n")},
    # header mutations at route level (the virtual host and the route config add theirs)
    {"match": {"prefix": "/headers"}, "route": echo_route("alpha"),
     "request_headers_to_add": [
         hdr("x-append", "route", "APPEND_IF_EXISTS_OR_ADD"),
         hdr("x-if-absent", "route", "ADD_IF_ABSENT"),
         hdr("x-overwrite", "route", "OVERWRITE_IF_EXISTS_OR_ADD"),
         hdr("x-overwrite-only", "route", "OVERWRITE_IF_EXISTS"),
         hdr("x-level", "route", "OVERWRITE_IF_EXISTS_OR_ADD"),
         hdr("x-empty-kept", "", keep_empty_value=True),
         hdr("x-empty-dropped", ""),
     ],
     "request_headers_to_remove": ["x-remove-me"],
     "response_headers_to_add": [
         hdr("x-resp-route", "route"),
         hdr("x-resp-level", "route", "OVERWRITE_IF_EXISTS_OR_ADD"),
     ],
     "response_headers_to_remove": ["x-upstream-secret"]},
    # retries and timeouts
    {"match": {"path": "/retry"}, "route": echo_route("alpha", retry_policy=RETRY)},
    {"match": {"prefix": "/no-retry"}, "route": echo_route("alpha")},
    {"match": {"prefix": "/retry-codes"}, "route": echo_route("alpha", retry_policy={
        "retry_on": "retriable-status-codes", "retriable_status_codes": [418], "num_retries": 1})},
    {"match": {"prefix": "/retry-4xx"}, "route": echo_route("alpha", retry_policy={
        "retry_on": "retriable-4xx", "num_retries": 1})},
    {"match": {"prefix": "/retry-gateway"}, "route": echo_route("alpha", retry_policy={
        "retry_on": "gateway-error", "num_retries": 1})},
    {"match": {"prefix": "/per-try"}, "route": echo_route("alpha", timeout="5s", retry_policy={
        "retry_on": "5xx", "num_retries": 1, "per_try_timeout": "0.5s"})},
    {"match": {"prefix": "/timeout-disabled"}, "route": echo_route("alpha", timeout="0s")},
    {"match": {"prefix": "/timeout"}, "route": echo_route("alpha", timeout="0.5s")},
    {"match": {"prefix": "/dead-retry"}, "route": echo_route("dead", retry_policy=RETRY)},
    {"match": {"prefix": "/dead"}, "route": echo_route("dead")},
    {"match": {"prefix": "/unknown-cluster"}, "route": {"cluster_header": "x-none-such"}},
    # everything else on this host
    {"match": {"prefix": "/"}, "route": echo_route("gamma")},
]


def route_config() -> dict:
    def to(cluster: str, vh: str) -> list:
        return [{"match": {"prefix": "/"}, "route": echo_route(cluster),
                 "request_headers_to_add": [hdr("x-vh-route", vh)]}]

    return {
        "name": "differential",
        "request_headers_to_add": [
            hdr("x-rc-req", "rc"),
            hdr("x-level", "rc", "OVERWRITE_IF_EXISTS_OR_ADD"),
        ],
        "request_headers_to_remove": ["x-rc-drop"],
        "response_headers_to_add": [
            hdr("x-rc-resp", "rc"),
            hdr("x-resp-level", "rc", "OVERWRITE_IF_EXISTS_OR_ADD"),
        ],
        "response_headers_to_remove": ["x-rc-strip"],
        "virtual_hosts": [
            {"name": "exact", "domains": ["exact.test", "exact.test:8080"],
             "routes": to("alpha", "exact")},
            {"name": "port-only", "domains": ["portonly.test:9000"],
             "routes": to("beta", "port-only")},
            {"name": "suffix", "domains": ["*.suffix.test"], "routes": to("beta", "suffix")},
            {"name": "deep-suffix", "domains": ["*.deep.suffix.test"],
             "routes": to("gamma", "deep-suffix")},
            {"name": "prefix", "domains": ["prefix.*"], "routes": to("gamma", "prefix")},
            {"name": "smuggling", "domains": ["s.test"], "routes": to("alpha", "smuggling")},
            {"name": "routes", "domains": ["routes.test"],
             "include_request_attempt_count": True,
             "request_headers_to_add": [
                 hdr("x-vh-req", "routes"),
                 hdr("x-level", "vhost", "OVERWRITE_IF_EXISTS_OR_ADD"),
             ],
             "request_headers_to_remove": ["x-vh-drop"],
             "response_headers_to_add": [
                 hdr("x-vh-resp", "routes"),
                 hdr("x-resp-level", "vhost", "OVERWRITE_IF_EXISTS_OR_ADD"),
             ],
             "response_headers_to_remove": ["x-vh-strip"],
             "routes": ROUTES_VHOST_ROUTES},
            {"name": "fallback", "domains": ["*"], "routes": [
                {"match": {"prefix": "/fallback"}, "direct_response": direct(200, "fallback\n")}]},
        ],
    }


def bootstrap(listen_port: int, admin_port: int, upstreams: dict[str, int],
              dead_port: int) -> dict:
    def addr(port):
        return {"socket_address": {"address": "127.0.0.1", "port_value": port}}

    def cluster(name, port, hostname=None):
        endpoint = {"address": addr(port)}
        if hostname:
            endpoint["hostname"] = hostname
        # Retry cases run concurrently: room for them all (Envoy's default is 3 at a time).
        limits = {"thresholds": [{"max_retries": 1000}]}
        return {"name": name, "type": "STATIC", "connect_timeout": "1s",
                "circuit_breakers": limits,
                "load_assignment": {"cluster_name": name, "endpoints": [
                    {"lb_endpoints": [{"endpoint": endpoint}]}]}}

    hcm = {
        "@type": HCM,
        "stat_prefix": "differential",
        "codec_type": "AUTO",
        "server_name": SERVER_NAME,
        "use_remote_address": True,
        "max_request_headers_kb": smuggling.MAX_HEADERS_KB,
        "route_config": route_config(),
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }
    clusters = [cluster(n, upstreams[n]) for n in UPSTREAMS]
    clusters.append(cluster("named", upstreams["alpha"], hostname="named.internal"))
    clusters.append(cluster("dead", dead_port))
    return {
        "admin": {"address": addr(admin_port)},
        "static_resources": {
            "listeners": [{"name": "differential", "address": addr(listen_port),
                           "filter_chains": [{"filters": [{
                               "name": "envoy.filters.network.http_connection_manager",
                               "typed_config": hcm}]}]}],
            "clusters": clusters,
        },
    }


# ---------------------------------------------------------------------------------------------
# The corpus


@dataclass
class Case:
    """One request and what Envoy's answer must show.

    `status`: the status. `up`: the upstream that answered (None: not proxied). `target`: the
    request-target the upstream saw. `req`: request headers as the upstream saw them (a value,
    None for absent, True for present). `resp`: response headers likewise. `body`: the exact
    body of a response that is not an echo. `attempts`: x-envoy-attempt-count upstream.
    """
    name: str
    raw: bytes
    status: int
    up: str | None = None
    target: str | None = None
    req: dict = field(default_factory=dict)
    resp: dict = field(default_factory=dict)
    body: str | None = None
    attempts: int | None = None

    @property
    def method(self) -> str:
        return self.raw.split(b" ", 1)[0].decode("latin-1")


CASES: list[Case] = []


def case(name: str, method: str, uri: str, host: str, status: int = 200,
         headers: list | None = None, send: bytes = b"", version: str = "HTTP/1.1",
         **expect) -> None:
    hs = [("Host", host)] + list(headers or [])
    CASES.append(Case(name, request(method, uri, hs, send, version), status, **expect))


R = "routes.test"

# Domains: exact, exact with port, *.suffix (longest first), prefix.*, *, case-insensitive.
case("domain-exact", "GET", "/", "exact.test", up="alpha", req={"x-vh-route": "exact"})
case("domain-exact-uppercase", "GET", "/", "EXACT.TEST", up="alpha", req={"x-vh-route": "exact"})
case("domain-exact-with-port", "GET", "/", "exact.test:8080", up="alpha",
     req={"x-vh-route": "exact", "host": "exact.test:8080"})
case("domain-exact-other-port", "GET", "/", "exact.test:9999", status=404)
case("domain-port-only-with-port", "GET", "/", "portonly.test:9000", up="beta")
case("domain-port-only-without-port", "GET", "/", "portonly.test", status=404)
case("domain-suffix", "GET", "/", "a.suffix.test", up="beta", req={"x-vh-route": "suffix"})
case("domain-suffix-multi-label", "GET", "/", "a.b.suffix.test", up="beta")
case("domain-suffix-bare", "GET", "/", "suffix.test", status=404)
case("domain-suffix-with-port", "GET", "/", "a.suffix.test:8080", status=404)
case("domain-longest-suffix", "GET", "/", "x.deep.suffix.test", up="gamma",
     req={"x-vh-route": "deep-suffix"})
case("domain-prefix", "GET", "/", "prefix.anything", up="gamma", req={"x-vh-route": "prefix"})
case("domain-suffix-beats-prefix", "GET", "/", "prefix.suffix.test", up="beta")
case("domain-wildcard-route", "GET", "/fallback", "unknown.test", body="fallback\n")
case("domain-wildcard-no-route", "GET", "/nothing", "unknown.test", status=404, body="")
# Path matchers.
case("path-exact", "GET", "/exact", R, up="alpha", req={"x-route": "exact"})
case("path-exact-with-query", "GET", "/exact?a=1", R, up="alpha", target="/exact?a=1")
case("path-exact-trailing-slash", "GET", "/exact/", R, up="gamma")
case("path-exact-wrong-case", "GET", "/EXACT", R, up="gamma")
case("path-case-insensitive", "GET", "/CI-PATH", R, up="beta")
case("prefix-case-insensitive", "GET", "/ci/thing", R, up="gamma", target="/ci/thing")
case("regex-match", "GET", "/regex/123", R, up="gamma", target="/regex/123")
case("regex-query-ignored", "GET", "/regex/123?x=y", R, up="gamma")
case("regex-no-match", "GET", "/regex/12a", R, up="gamma", target="/regex/12a")
case("path-separated-prefix-exact", "GET", "/sep", R, up="beta")
case("path-separated-prefix-child", "GET", "/sep/child", R, up="beta")
case("path-separated-prefix-query", "GET", "/sep?x=1", R, up="beta")
case("path-separated-prefix-not-segment", "GET", "/sepx", R, up="gamma")
# Header matchers.
case("header-exact", "GET", "/hdr", R, headers=[("x-env", "prod")], up="alpha")
case("header-exact-case-differs", "GET", "/hdr", R, headers=[("x-env", "PROD")], up="gamma")
case("header-ignore-case", "GET", "/hdr", R, headers=[("x-env", "loud")], up="alpha",
     req={"x-matched": "ignore-case"})
case("header-prefix", "GET", "/hdr", R, headers=[("x-env", "staging")], up="beta")
case("header-suffix", "GET", "/hdr", R, headers=[("x-env", "team-dev")], up="gamma",
     target="/hdr")
case("header-contains", "GET", "/hdr", R, headers=[("x-env", "acanaryz")], up="alpha",
     req={"x-matched": "contains"})
case("header-regex", "GET", "/hdr", R, headers=[("x-env", "v42")], up="beta",
     req={"x-matched": "regex"})
case("header-regex-partial-no-match", "GET", "/hdr", R, headers=[("x-env", "v42x")], up="gamma",
     req={"x-matched": None})
case("header-present", "GET", "/hdr", R, headers=[("x-flag", "")], up="gamma",
     req={"x-matched": "present"})
case("header-all-of-two", "GET", "/hdr", R, headers=[("x-a", "1"), ("x-b", "2")], up="beta",
     req={"x-matched": "both"})
case("header-one-of-two", "GET", "/hdr", R, headers=[("x-a", "1")], up="gamma",
     req={"x-matched": None})
case("header-none", "GET", "/hdr", R, up="gamma", req={"x-matched": None})
case("header-invert-absent-no-match", "GET", "/inv", R, status=403, body="blocked\n")
case("header-invert-other-value", "GET", "/inv", R, headers=[("x-block", "no")], up="alpha")
case("header-invert-blocked", "GET", "/inv", R, headers=[("x-block", "yes")], status=403,
     body="blocked\n")
case("header-method-post", "POST", "/method", R, send=b"x", up="beta")
case("header-method-get", "GET", "/method", R, up="gamma")
# Query parameter matchers.
case("query-exact", "GET", "/query?q=1", R, up="alpha", target="/query?q=1")
case("query-exact-other-value", "GET", "/query?q=2", R, up="gamma")
case("query-present", "GET", "/query?debug", R, up="beta")
case("query-present-with-value", "GET", "/query?x=1&debug=yes", R, up="beta")
case("query-prefix", "GET", "/query?v=abcdef", R, up="gamma")
case("query-none", "GET", "/query", R, up="gamma")
# Cluster choice.
case("weighted-clusters", "GET", "/weighted", R, up="beta", req={"x-weighted": "beta"},
     resp={"x-weighted-resp": "beta"})
case("cluster-header", "GET", "/by-header", R, headers=[("x-target-cluster", "beta")], up="beta")
case("cluster-header-missing", "GET", "/by-header", R, status=503)
case("cluster-header-unknown", "GET", "/by-header", R, headers=[("x-target-cluster", "nope")],
     status=503)
case("cluster-header-unset-name", "GET", "/unknown-cluster", R, status=503)
# Rewrites.
case("prefix-rewrite", "GET", "/old/path?x=1", R, up="alpha", target="/new/path?x=1")
case("prefix-rewrite-exact-prefix", "GET", "/old/", R, up="alpha", target="/new/")
case("prefix-rewrite-to-root", "GET", "/strip/rest", R, up="alpha", target="//rest")
case("regex-rewrite", "GET", "/rx/one/two", R, up="alpha", target="/swapped/two/one")
case("regex-rewrite-keeps-query", "GET", "/rx/a/b?k=v", R, up="alpha",
     target="/swapped/b/a?k=v")
case("regex-rewrite-no-match", "GET", "/rx/a/b/c", R, up="alpha", target="/rx/a/b/c")
case("host-rewrite-literal", "GET", "/host-literal", R, up="alpha",
     req={"host": "rewritten.test"})
case("auto-host-rewrite", "GET", "/host-auto", R, up="alpha", req={"host": "named.internal"})
# Redirects.
case("redirect-https", "GET", "/redir/https", R, status=301,
     resp={"location": "https://routes.test/redir/https"})
case("redirect-host", "GET", "/redir/host?keep=1", R, status=302,
     resp={"location": "http://other.test/redir/host?keep=1"})
case("redirect-path-strip-query", "GET", "/redir/path?drop=1", R, status=303,
     resp={"location": "http://routes.test/elsewhere"})
case("redirect-prefix-rewrite", "GET", "/redir/prefix/a/b", R, status=307,
     resp={"location": "http://routes.test/moved/a/b"})
case("redirect-port", "GET", "/redir/port", R, status=308,
     resp={"location": "http://routes.test:8443/redir/port"})
case("redirect-scheme-and-host", "GET", "/redir/scheme", R, status=301,
     resp={"location": "https://secure.test/redir/scheme"})
case("redirect-regex", "GET", "/redir/rx/x/y", R, status=301,
     resp={"location": "http://routes.test/re/x/y"})
case("redirect-head", "HEAD", "/redir/host", R, status=302)
# Direct responses.
case("direct-200", "GET", "/direct/ok", R, body="direct ok\n", resp={"x-direct": "yes"})
case("direct-503-no-body", "GET", "/direct/empty", R, status=503, body="")
case("direct-418", "GET", "/direct/teapot", R, status=418, body="short and stout\n")
case("direct-head", "HEAD", "/direct/ok", R, body="")
case("direct-post", "POST", "/direct/ok", R, send=b"ignored", status=200)
# Header mutations: route, virtual host and route config levels.
case("headers-add-all-levels", "GET", "/headers", R, up="alpha",
     req={"x-rc-req": "rc", "x-vh-req": "routes", "x-append": "route", "x-if-absent": "route",
          "x-overwrite": "route", "x-overwrite-only": None, "x-empty-kept": "",
          "x-empty-dropped": None},
     resp={"x-rc-resp": "rc", "x-vh-resp": "routes", "x-resp-route": "route"})
case("headers-existing-values", "GET", "/headers", R, up="alpha",
     headers=[("x-append", "client"), ("x-if-absent", "client"), ("x-overwrite", "client"),
              ("x-overwrite-only", "client")],
     req={"x-if-absent": "client", "x-overwrite": "route", "x-overwrite-only": "route"})
case("headers-least-specific-wins", "GET", "/headers", R, up="alpha",
     headers=[("x-level", "client")], req={"x-level": "rc"}, resp={"x-resp-level": "rc"})
case("headers-remove-request", "GET", "/headers", R, up="alpha",
     headers=[("x-remove-me", "1"), ("x-vh-drop", "1"), ("x-rc-drop", "1"), ("x-keep", "1")],
     req={"x-remove-me": None, "x-vh-drop": None, "x-rc-drop": None, "x-keep": "1"})
case("headers-remove-response", "GET", "/headers", R, up="alpha",
     headers=[("x-echo-header", "x-upstream-secret: s"), ("x-echo-header", "x-vh-strip: s"),
              ("x-echo-header", "x-rc-strip: s"), ("x-echo-header", "x-kept: k")],
     resp={"x-upstream-secret": None, "x-vh-strip": None, "x-rc-strip": None, "x-kept": "k"})
case("headers-on-direct-response", "GET", "/direct/ok", R,
     resp={"x-rc-resp": "rc", "x-vh-resp": "routes", "x-direct": "yes"})
case("headers-on-redirect", "GET", "/redir/host", R, status=302, resp={"x-rc-resp": "rc"})
case("headers-other-vhost", "GET", "/", "exact.test", up="alpha",
     req={"x-rc-req": "rc", "x-vh-req": None}, resp={"x-vh-resp": None})
# Retries.
case("retry-5xx-then-ok", "GET", "/retry", R, headers=[("x-echo-fail", "{key}=1")], up="alpha",
     attempts=2)
case("retry-reset-then-ok", "GET", "/retry", R, headers=[("x-echo-fail", "{key}=1:reset")],
     up="alpha", attempts=2)
case("retry-exhausted", "GET", "/retry", R, headers=[("x-echo-fail", "{key}=9")], status=503,
     body="failed\n", resp={"x-echo-failed": True})
case("retry-post-body-replayed", "POST", "/retry", R, headers=[("x-echo-fail", "{key}=1")],
     send=b"payload", up="alpha", attempts=2, req={"content-length": "7"})
case("retry-none-configured", "GET", "/no-retry", R, headers=[("x-echo-fail", "{key}=1")],
     status=503, body="failed\n")
case("retry-status-code", "GET", "/retry-codes", R, headers=[("x-echo-fail", "{key}=1:418")],
     up="alpha", attempts=2)
case("retry-status-code-other", "GET", "/retry-codes", R,
     headers=[("x-echo-fail", "{key}=1:503")], status=503)
case("retry-4xx-409", "GET", "/retry-4xx", R, headers=[("x-echo-fail", "{key}=1:409")],
     up="alpha", attempts=2)
case("retry-4xx-not-404", "GET", "/retry-4xx", R, headers=[("x-echo-fail", "{key}=1:404")],
     status=404)
case("retry-gateway-502", "GET", "/retry-gateway", R, headers=[("x-echo-fail", "{key}=1:502")],
     up="alpha", attempts=2)
case("retry-gateway-reset", "GET", "/retry-gateway", R, headers=[("x-echo-fail", "{key}=1:reset")],
     up="alpha", attempts=2)
case("retry-gateway-not-500", "GET", "/retry-gateway", R,
     headers=[("x-echo-fail", "{key}=1:500")], status=500)
case("retry-per-try-timeout", "GET", "/per-try", R, headers=[("x-echo-fail", "{key}=1:slow1500")],
     up="alpha")
case("retry-connect-failure", "GET", "/dead-retry", R, status=503)
case("connect-failure", "GET", "/dead", R, status=503)
# Timeouts.
case("timeout-fires", "GET", "/timeout", R, headers=[("x-echo-delay-ms", "1500")], status=504,
     body="upstream request timeout")
case("timeout-not-reached", "GET", "/timeout", R, headers=[("x-echo-delay-ms", "50")],
     up="alpha", req={"x-envoy-expected-rq-timeout-ms": "500"})
case("timeout-disabled", "GET", "/timeout-disabled", R, headers=[("x-echo-delay-ms", "1200")],
     up="alpha", req={"x-envoy-expected-rq-timeout-ms": None})
# Methods, bodies and what the proxy adds on the way.
case("post-body", "POST", "/", R, send=b"hello world", up="gamma", req={"content-length": "11"})
case("put-body", "PUT", "/", R, send=b"x" * 10000, up="gamma")
case("delete", "DELETE", "/item/1", R, up="gamma")
case("head-proxied", "HEAD", "/", R, up=None, status=200)
case("options", "OPTIONS", "/", R, up="gamma")
case("chunked-request", "POST", "/", R, up="gamma",
     headers=[("Transfer-Encoding", "chunked")], send=b"5\r\nhello\r\n0\r\n\r\n")
case("upstream-status-passthrough", "GET", "/", R, headers=[("x-echo-status", "201")],
     status=201, up="gamma")
case("upstream-204", "GET", "/", R, headers=[("x-echo-status", "204")], status=204)
case("upstream-chunked-response", "GET", "/", R, headers=[("x-echo-chunked", "1")], up="gamma")
case("server-header-overwritten", "GET", "/", R, up="gamma", resp={"server": SERVER_NAME})
# use_remote_address: a loopback peer is recorded in XFF as the host's own address (Envoy
# takes its local address for a loopback peer), which makes the request external.
case("xff-set", "GET", "/", R, up="gamma",
     req={"x-forwarded-for": True, "x-envoy-external-address": "127.0.0.1"})
case("xff-appended", "GET", "/", R, headers=[("x-forwarded-for", "203.0.113.7")], up="gamma",
     req={"x-forwarded-for": True})
case("request-id-generated", "GET", "/", R, up="gamma", req={"x-request-id": True})
case("request-id-replaced-external", "GET", "/", R, headers=[("x-request-id", "fixed-id")],
     up="gamma", req={"x-request-id": True})
case("envoy-headers-stripped-external", "GET", "/", R, up="gamma",
     headers=[("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "3")],
     req={"x-envoy-retry-on": None, "x-envoy-max-retries": None})
case("hop-by-hop-removed", "GET", "/", R, up="gamma",
     headers=[("Connection", "keep-alive, x-hop"), ("x-hop", "1"), ("Keep-Alive", "timeout=5"),
              ("TE", "trailers")],
     req={"x-hop": None, "keep-alive": None, "connection": None, "te": "trailers"})
case("absolute-form-host", "GET", "http://exact.test/abs", "routes.test", up="alpha",
     target="/abs")
case("http10-refused-by-default", "GET", "/", R, version="HTTP/1.0", status=426)

# Malformed inputs, sent raw (from the smuggling corpus): the whole answer is compared.
MALFORMED = [
    "cl-and-te", "cl-duplicate-different", "cl-negative", "te-gzip-only",
    "te-chunked-then-gzip", "te-obs-fold", "chunk-size-not-hex", "chunk-data-too-long",
    "obs-fold", "header-space-in-name", "header-nul-in-value", "header-cr-in-value",
    "bare-lf-line-ends", "header-too-large", "too-many-headers", "host-missing",
    "host-duplicate", "method-unknown", "request-line-double-space", "target-with-space",
    "version-2", "http09", "request-line-too-long", "upgrade-websocket-not-enabled",
    "connect-without-route",
]
SMUGGLING = {c.name: c for c in smuggling.CASES}
# Envoy's status where it differs from the smuggling corpus's record: this listener has no
# route for a comma-joined Host and does not accept HTTP/1.0 (unknown versions count as 1.0).
RAW_STATUS = {"host-duplicate": 404, "version-2": 426, "http09": 426}
for _name in MALFORMED:
    _c = SMUGGLING[_name]
    _first = (_c.envoy or _c.expect).split()[0]
    CASES.append(Case("raw-" + _name, _c.payload.replace(smuggling.TAG, b"x" * len(smuggling.TAG)),
                      RAW_STATUS.get(_name, int(_first.split("@")[0]))))

# ---------------------------------------------------------------------------------------------
# Named exceptions: where shardproxy must answer differently from Envoy, and why.


@dataclass
class Difference:
    name: str
    reason: str
    cases: list[str]
    status: dict[str, int]  # case -> the status shardproxy must answer instead of Envoy's


def strictness_differences() -> list[Difference]:
    """One Difference per malformed case where the smuggling corpus expects shardproxy to
    differ from Envoy (the reasons live with the cases in smuggling.py)."""
    out = []
    for name in MALFORMED:
        c = SMUGGLING[name]
        if c.envoy and c.envoy.split()[0] != c.expect.split()[0]:
            status = int(c.expect.split()[0].split("@")[0])
            out.append(Difference(f"strict-{name}", c.why, [f"raw-{name}"],
                                  {f"raw-{name}": status}))
    return out


EXCEPTIONS: list[Difference] = strictness_differences()

# ---------------------------------------------------------------------------------------------
# Running and comparing

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Response headers compared for presence only: their values are clocks and timings.
PRESENCE_ONLY = {"date", "x-envoy-upstream-service-time"}
# Request headers (as the upstream saw them) compared for presence only: the time left of the
# route timeout when the attempt started (lower on a retry, by however long the first took).
ECHO_PRESENCE_ONLY = {"x-envoy-expected-rq-timeout-ms"}


def normalise(resp: Response | str, c: Case, key: str) -> dict:
    """What is compared between proxies.

    Compared exactly: status line version and status; every response header (name and
    value, duplicates in order) except `date` and `x-envoy-upstream-service-time` (presence
    only) and the `content-length` of an echo (its digits depend on connection counters); the
    body, or for an echo everything the upstream saw (method, target, version, headers with a
    generated x-request-id reduced to "<uuid>" and x-envoy-expected-rq-timeout-ms to
    presence, body length and hash, trailers) except the upstream's own connection
    counters. The per-proxy failure key a case sent (`key`) reads "{key}". A string is a
    connection that ended without a response.
    """
    if isinstance(resp, str):
        return {"no_response": resp}
    return json.loads(json.dumps(normalise_response(resp, c)).replace(key, "{key}"))


def normalise_response(resp: Response, c: Case) -> dict:
    echo = resp.echo()
    # An echo's length (also announced in answer to HEAD) varies with connection counters.
    echo_length = echo is not None or (
        c.method == "HEAD" and resp.header("content-type") == "application/json")
    headers = []
    for k, v in resp.headers:
        if k in PRESENCE_ONLY or (echo_length and k == "content-length"):
            v = "<present>"
        headers.append([k, v])
    headers.sort(key=lambda kv: kv[0])
    out = {"version": resp.version, "status": resp.status, "interim": resp.interim,
           "headers": headers, "trailers": sorted(map(list, resp.trailers))}
    if echo is None:
        out["body"] = resp.body.decode("latin-1")
    else:
        echo.pop("conn", None)
        echo.pop("seq", None)
        echo["headers"] = sorted(
            ([k, normalise_echo_header(k.lower(), v)] for k, v in echo["headers"]),
            key=lambda kv: kv[0].lower())
        out["echo"] = echo
    return out


def normalise_echo_header(name: str, value: str) -> str:
    if name == "x-request-id" and UUID.match(value):
        return "<uuid>"
    return "<present>" if name in ECHO_PRESENCE_ONLY else value


RUN = os.urandom(4).hex()


def fail_key(proxy: str, c: Case) -> str:
    """The upstream counts failures per key: each run, proxy and case gets its own."""
    return f"{RUN}-{proxy}-{c.name}"


def fetch(port: int, proxy: str, c: Case) -> Response | str:
    raw = c.raw.replace(b"{key}", fail_key(proxy, c).encode())
    try:
        with Conn(port, timeout=CASE_TIMEOUT) as conn:
            conn.send(raw)
            return conn.read_response(c.method)
    except Closed as e:
        return f"closed ({e.how})"
    except Hang:
        return "hang"
    except ValueError as e:
        return f"garbage ({e})"


def header_of(pairs, name: str) -> list[str]:
    return [v for k, v in pairs if k.lower() == name]


def check_expectations(c: Case, resp: Response | str) -> list[str]:
    """Whether Envoy's answer shows what the case says it tests."""
    if isinstance(resp, str):
        return [f"no response: {resp}"]
    errs = []
    if resp.status != c.status:
        errs.append(f"status {resp.status}, want {c.status}")
    echo = resp.echo()
    if c.up is not None:
        if echo is None:
            errs.append(f"not proxied, want upstream {c.up}")
        elif echo["upstream"] != c.up:
            errs.append(f"upstream {echo['upstream']}, want {c.up}")
    if echo is not None and c.target is not None and echo["target"] != c.target:
        errs.append(f"target {echo['target']!r}, want {c.target!r}")
    for name, want in c.req.items():
        got = header_of(echo["headers"], name) if echo else []
        errs += expect_header("request", name, got, want)
    for name, want in c.resp.items():
        errs += expect_header("response", name, header_of(resp.headers, name), want)
    if c.body is not None and resp.body.decode("latin-1") != c.body:
        errs.append(f"body {resp.body[:200]!r}, want {c.body!r}")
    if c.attempts is not None:
        got = header_of(echo["headers"], "x-envoy-attempt-count") if echo else []
        if got != [str(c.attempts)]:
            errs.append(f"x-envoy-attempt-count {got}, want {c.attempts}")
    return errs


def expect_header(side: str, name: str, got: list[str], want) -> list[str]:
    if want is None and got:
        return [f"{side} header {name} = {got}, want absent"]
    if want is True and not got:
        return [f"{side} header {name} absent, want present"]
    if isinstance(want, str) and got != [want]:
        return [f"{side} header {name} = {got}, want [{want!r}]"]
    return []


def differences(a: dict, b: dict, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += differences(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        return out
    return [] if a == b else [f"{path}: envoy {a!r} / other {b!r}"]


def run(targets: list[tuple[str, int]]) -> int:
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names), "duplicate case names"
    assert targets[0][0] == "envoy", "the first target is the reference (Envoy)"
    results: dict[str, dict[str, Response | str]] = {}
    with ThreadPoolExecutor(max_workers=12) as pool:
        for proxy, port in targets:
            results[proxy] = dict(zip(names, pool.map(lambda c: fetch(port, proxy, c), CASES)))
    exceptions = {case: d for d in EXCEPTIONS for case in d.cases}
    failures = 0
    for c in CASES:
        envoy = results["envoy"][c.name]
        errs = check_expectations(c, envoy)
        lines = [f"expectation: {e}" for e in errs]
        for proxy, _ in targets[1:]:
            other = results[proxy][c.name]
            # A second Envoy (the twin) must agree on every case: it proves that what is
            # compared does not flap from run to run. The named exceptions are shardproxy's.
            d = None if proxy.startswith("envoy") else exceptions.get(c.name)
            if d is not None:
                got = other.status if isinstance(other, Response) else other
                if got != d.status[c.name]:
                    lines.append(f"{proxy}: {got}, want {d.status[c.name]} (exception {d.name})")
            else:
                lines += [f"{proxy}: {x}" for x in differences(
                    normalise(envoy, c, fail_key("envoy", c)),
                    normalise(other, c, fail_key(proxy, c)))]
        status = envoy.status if isinstance(envoy, Response) else envoy
        tag = "FAIL" if lines else ("exc " if c.name in exceptions else "ok  ")
        print(f"{tag} {c.name:38} {status}")
        for line in lines:
            print(f"       {line}")
        failures += bool(lines)
    print(f"{len(CASES) - failures}/{len(CASES)} cases agree "
          f"({', '.join(p for p, _ in targets)}); {len(exceptions)} named exceptions")
    return 1 if failures else 0


def exceptions_list() -> str:
    return "".join(f"- **{d.name}** ({', '.join(f'`{k}`: {v}' for k, v in d.status.items())}): "
                   f"{d.reason}\n" for d in EXCEPTIONS)


def table() -> str:
    """One row per case: the request line and Host, and what Envoy answers."""
    rows = ["| case | request | Envoy 1.40 answers |", "|---|---|---|"]
    for c in CASES:
        line = c.raw.split(b"\r\n", 1)[0][:70].decode("latin-1")
        line = line.encode("unicode_escape").decode("ascii").replace("|", "\\|")
        host = re.search(rb"\r\nHost: ([^\r]*)", c.raw)
        where = f"{c.status}"
        if c.up:
            where += f" from {c.up}" + (f", upstream saw `{c.target}`" if c.target else "")
        elif c.body:
            where += f", body `{c.body.strip()}`"
        for k, v in c.resp.items():
            if isinstance(v, str):
                where += f", {k}: `{v}`"
        if c.name.startswith("raw-"):
            sent = f"the bytes of smuggling case {c.name[4:]}"
        else:
            sent = f"`{line}`" + (f" Host `{host.group(1).decode()}`" if host else "")
        rows.append(f"| {c.name} | {sent} | {where} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bootstrap")
    b.add_argument("--listen-port", type=int, required=True)
    b.add_argument("--admin-port", type=int, required=True)
    b.add_argument("--upstream", action="append", required=True, help="NAME=PORT")
    b.add_argument("--dead-port", type=int, required=True, help="a port nothing listens on")
    r = sub.add_parser("run")
    r.add_argument("--target", action="append", required=True,
                   help="PROXY=PORT; the first is Envoy, the reference")
    sub.add_parser("exceptions", help="print the named exceptions (Markdown list)")
    sub.add_parser("table", help="print the Markdown table of cases")
    args = p.parse_args()
    if args.cmd == "bootstrap":
        ups = dict((n, int(port)) for n, port in (u.split("=") for u in args.upstream))
        print(json.dumps(bootstrap(args.listen_port, args.admin_port, ups, args.dead_port)))
        return 0
    if args.cmd == "exceptions":
        print(exceptions_list(), end="")
        return 0
    if args.cmd == "table":
        print(table(), end="")
        return 0
    return run([(n, int(port)) for n, port in (t.split("=") for t in args.target)])


if __name__ == "__main__":
    sys.exit(main())
