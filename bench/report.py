"""Results: medians over rounds, ratios against the baseline, RESULTS.md sections, SVG chart."""
from __future__ import annotations

import os
import re
import statistics
from html import escape

# key, label, scenario (None: from any), better ("up"/"down"), decimals
METRICS = [
    ("req_s", "req/s", "rps", "up", 0),
    ("p50_ms", "p50 ms", "rps", "down", 3),
    ("p99_ms", "p99 ms", "rps", "down", 3),
    ("cpu_us_req", "CPU µs/req", "rps", "down", 1),
    ("conn_s", "new conn/s", "newconn", "up", 0),
    ("cpu_us_conn", "CPU µs/conn", "newconn", "down", 1),
    ("nc_p99_ms", "newconn p99 ms", "newconn", "down", 3),
    ("gb_s", "GB/s", "bulk", "up", 2),
    ("cpu_s_gb", "CPU s/GB", "bulk", "down", 3),
    ("kib_idle_conn", "KiB per idle conn", "idle", "down", 1),
    ("http_req_s", "req/s 12 B", "http", "up", 0),
    ("http_p99_ms", "p99 ms 12 B", "http", "down", 3),
    ("http_cpu_us_req", "CPU µs/req 12 B", "http", "down", 1),
    ("http_rss_mb", "RSS MB keep-alive load", "http", "down", 1),
    ("http16k_req_s", "req/s 16 KiB", "http16k", "up", 0),
    ("http16k_p99_ms", "p99 ms 16 KiB", "http16k", "down", 3),
    ("http16k_cpu_us_req", "CPU µs/req 16 KiB", "http16k", "down", 1),
    ("httpclose_req_s", "req/s close", "httpclose", "up", 0),
    ("httpclose_p99_ms", "p99 ms close", "httpclose", "down", 3),
    ("httpclose_cpu_us_req", "CPU µs/req close", "httpclose", "down", 1),
    ("https_req_s", "req/s HTTPS", "https", "up", 0),
    ("https_p99_ms", "p99 ms HTTPS", "https", "down", 3),
    ("https_cpu_us_req", "CPU µs/req HTTPS", "https", "down", 1),
    ("https_rss_mb", "RSS MB HTTPS keep-alive load", "https", "down", 1),
    ("tlsnew_hs_s", "full handshakes/s", "tlsnew", "up", 0),
    ("tlsnew_cpu_us_hs", "CPU µs/full handshake", "tlsnew", "down", 1),
    ("tlsnew_hs_core", "full handshakes/s per core", "tlsnew", "up", 0),
    ("tlsresume_hs_s", "resumed handshakes/s", "tlsresume", "up", 0),
    ("tlsresume_cpu_us_hs", "CPU µs/resumed handshake", "tlsresume", "down", 1),
    ("tlsresume_hs_core", "resumed handshakes/s per core", "tlsresume", "up", 0),
    ("tlsresume_pct", "% resumed", "tlsresume", "up", 1),
    ("resume_gain", "resumed ÷ full per core", "tlsresume", "up", 2),
    ("tlsidle_kib_conn", "KiB per idle TLS conn", "tlsidle", "down", 1),
    ("tlspass_gb_s", "GB/s passthrough", "tlspass", "up", 2),
    ("tlspass_cpu_s_gb", "CPU s/GB passthrough", "tlspass", "down", 3),
    ("tlspass_gb_core", "GB/s per core passthrough", "tlspass", "up", 2),
    ("tlsterm_gb_s", "GB/s TLS termination", "tlsterm", "up", 2),
    ("tlsterm_cpu_s_gb", "CPU s/GB TLS termination", "tlsterm", "down", 3),
    ("tlsterm_gb_core", "GB/s per core TLS termination", "tlsterm", "up", 2),
    ("h2c_req_s", "req/s h2c", "h2c", "up", 0),
    ("h2c_p99_ms", "p99 ms h2c", "h2c", "down", 3),
    ("h2c_cpu_us_req", "CPU µs/req h2c", "h2c", "down", 1),
    ("h2c_rss_mb", "RSS MB h2c load", "h2c", "down", 1),
    ("grpc_req_s", "gRPC calls/s (fixed rate)", "grpc", "up", 0),
    ("grpc_p50_ms", "p50 ms gRPC", "grpc", "down", 3),
    ("grpc_p99_ms", "p99 ms gRPC", "grpc", "down", 3),
    ("grpc_cpu_us_req", "CPU µs/gRPC call", "grpc", "down", 1),
    ("h2idle_kib_conn", "KiB per idle h2 conn", "h2idle", "down", 1),
    ("rss_idle_mb", "RSS idle MB", None, "down", 1),
    ("rss_load_mb", "RSS loaded MB", None, "down", 1),
]
METRIC = {m[0]: m for m in METRICS}
HTTP_SCENARIOS = ("http", "http16k", "httpclose")
TLS_SCENARIOS = ("https", "tlsnew", "tlsresume", "tlsidle", "tlspass", "tlsterm")
HANDSHAKE_SCENARIOS = ("tlsnew", "tlsresume")
BULK_SCENARIOS = ("bulk", "tlspass", "tlsterm")
H2_SCENARIOS = ("h2c", "grpc", "h2idle")
IDLE_SCENARIOS = ("idle", "tlsidle", "h2idle")
# timed loads (the idle ones are not)
LOAD_SCENARIOS = ("rps", "newconn", "bulk") + HTTP_SCENARIOS + ("https", "tlsnew", "tlsresume", "tlspass",
                                                                "tlsterm", "h2c", "grpc")
COLORS = ["#1f6feb", "#e36209", "#2da44e", "#8250df", "#cf222e", "#6e7781"]


def _ratio(a, b):
    return a / b if (a is not None and b) else None


def round_metrics(run: dict) -> dict:
    """Per-round derived metrics from one measure() result."""
    out = {}
    sc = run.get("scenarios", {})
    if "rps" in sc:
        r = sc["rps"]
        out["req_s"] = r["requests"] / r["duration_s"] if r["duration_s"] else None
        out["p50_ms"] = r["p50_us"] / 1000
        out["p99_ms"] = r["p99_us"] / 1000
        out["cpu_us_req"] = r["cpu_s"] * 1e6 / r["requests"] if r["requests"] else None
        out["cpu_pct_rps"] = 100 * r["cpu_s"] / r["duration_s"] if r["duration_s"] else None
    if "newconn" in sc:
        r = sc["newconn"]
        out["conn_s"] = r["requests"] / r["duration_s"] if r["duration_s"] else None
        out["cpu_us_conn"] = r["cpu_s"] * 1e6 / r["requests"] if r["requests"] else None
        out["nc_p99_ms"] = r["p99_us"] / 1000
        out["cpu_pct_newconn"] = 100 * r["cpu_s"] / r["duration_s"] if r["duration_s"] else None
    if "bulk" in sc:
        r = sc["bulk"]
        gb = r["bytes"] / 1e9
        out["gb_s"] = gb / r["duration_s"] if r["duration_s"] else None
        out["cpu_s_gb"] = r["cpu_s"] / gb if gb else None
        out["cpu_pct_bulk"] = 100 * r["cpu_s"] / r["duration_s"] if r["duration_s"] else None
    for name in HTTP_SCENARIOS + ("https", "h2c", "grpc"):
        if name in sc:
            r = sc[name]
            out[f"{name}_req_s"] = r["requests"] / r["duration_s"] if r["duration_s"] else None
            out[f"{name}_p99_ms"] = r["p99_us"] / 1000
            out[f"{name}_cpu_us_req"] = r["cpu_s"] * 1e6 / r["requests"] if r["requests"] else None
            out[f"cpu_pct_{name}"] = 100 * r["cpu_s"] / r["duration_s"] if r["duration_s"] else None
    if "grpc" in sc:
        out["grpc_p50_ms"] = sc["grpc"]["p50_us"] / 1000
    for name in ("http", "https", "h2c"):
        if sc.get(name, {}).get("rss_warm"):
            # RSS after warm-up with the keep-alive connections open.
            out[f"{name}_rss_mb"] = sc[name]["rss_warm"] / 2**20
    for name in HANDSHAKE_SCENARIOS:
        if name in sc:
            r = sc[name]
            out[f"{name}_hs_s"] = r["requests"] / r["duration_s"] if r["duration_s"] else None
            cpu_us = r["cpu_s"] * 1e6 / r["requests"] if r["requests"] else None
            out[f"{name}_cpu_us_hs"] = cpu_us
            # What one core fully busy with handshakes would do, at this CPU per handshake.
            out[f"{name}_hs_core"] = 1e6 / cpu_us if cpu_us else None
            out[f"cpu_pct_{name}"] = 100 * r["cpu_s"] / r["duration_s"] if r["duration_s"] else None
    if "tlsresume" in sc and sc["tlsresume"]["requests"]:
        out["tlsresume_pct"] = 100 * sc["tlsresume"].get("resumed", 0) / sc["tlsresume"]["requests"]
        if out.get("tlsnew_cpu_us_hs") and out.get("tlsresume_cpu_us_hs"):
            out["resume_gain"] = out["tlsnew_cpu_us_hs"] / out["tlsresume_cpu_us_hs"]
    for name in ("tlspass", "tlsterm"):
        if name in sc:
            r = sc[name]
            gb = r["bytes"] / 1e9
            out[f"{name}_gb_s"] = gb / r["duration_s"] if r["duration_s"] else None
            out[f"{name}_cpu_s_gb"] = r["cpu_s"] / gb if gb else None
            # What one core fully busy relaying would move, at this CPU per GB.
            out[f"{name}_gb_core"] = gb / r["cpu_s"] if r["cpu_s"] else None
            out[f"cpu_pct_{name}"] = 100 * r["cpu_s"] / r["duration_s"] if r["duration_s"] else None
    for name in ("tlsidle", "h2idle"):
        if name in sc:
            r = sc[name]
            out[f"{name}_kib_conn"] = (r["rss_open"] - r["rss_before"]) / 1024 / r["held"] if r["held"] else None
    if "idle" in sc:
        r = sc["idle"]
        # Growth of the proxy tree's RSS with the connections open, per connection held.
        out["kib_idle_conn"] = (r["rss_open"] - r["rss_before"]) / 1024 / r["held"] if r["held"] else None
    if "rss_idle" in run:
        out["rss_idle_mb"] = run["rss_idle"] / 2**20
    warm = [r["rss_warm"] for r in sc.values() if r.get("rss_warm")]
    if warm:
        out["rss_load_mb"] = max(warm) / 2**20
    for name, r in sc.items():
        if r.get("proxy_core_busy") is not None:
            # Busy share of the proxy core that the proxy itself did not use: other load.
            own = r["cpu_s"] / r["duration_s"] if r["duration_s"] else 0
            out[f"noise_pct_{name}"] = max(0.0, 100 * (r["proxy_core_busy"] - own))
            out[f"client_core_pct_{name}"] = 100 * r["client_core_busy"]
            if r.get("requests") and name not in BULK_SCENARIOS:
                # Time the client core (load generator, upstream, and the kernel work of waking the
                # proxy's sockets, which the sender pays) spent per request.
                out[f"client_us_{name}"] = r["client_core_busy"] * r["duration_s"] * 1e6 / r["requests"]
    out["errors"] = sum(r.get("errors", 0) for r in sc.values())
    out["requests"] = sum(r.get("requests", 0) for r in sc.values())
    return out


def summarise(run: dict) -> dict:
    s = {}
    for name in run["proxies"]:
        rounds = [round_metrics(r) for r in run["runs"] if r["proxy"] == name]
        keys = sorted({k for rm in rounds for k in rm})
        med, per = {}, {}
        for k in keys:
            vals = [rm[k] for rm in rounds if rm.get(k) is not None]
            per[k] = vals
            if k in ("errors", "requests"):
                med[k] = sum(vals)
            else:
                med[k] = statistics.median(vals) if vals else None
        failures = [f for r in run["runs"] if r["proxy"] == name for f in r.get("failures", [])]
        s[name] = {"median": med, "rounds": per, "failures": failures,
                   "ok_rounds": sum(1 for r in run["runs"] if r["proxy"] == name and r.get("scenarios"))}
    return s


def fmt(v, dec):
    if v is None:
        return "—"
    if dec == 0:
        return f"{v:,.0f}"
    return f"{v:,.{dec}f}"


def one_line(sc: str, r: dict) -> str:
    if sc in IDLE_SCENARIOS:
        kib = (r["rss_open"] - r["rss_before"]) / 1024 / r["held"] if r["held"] else 0
        err = f", {r['errors']} errors {r.get('error_detail', '')}" if r.get("errors") else ""
        return (f"{kib:.1f} KiB per idle conn ({r['held']:,} held; RSS {r['rss_before'] / 2**20:.1f} → "
                f"{r['rss_open'] / 2**20:.1f} MB; opened in {r['duration_s']:.1f} s){err}")
    d = r["duration_s"] or 1
    own = 100 * r["cpu_s"] / d
    err = f", {r['errors']} errors {r.get('error_detail', '')}" if r.get("errors") else ""
    tls = f", {r['tls']}" if r.get("tls") else ""
    if sc in BULK_SCENARIOS:
        gb = r["bytes"] / 1e9
        return f"{gb / d:.2f} GB/s, {r['cpu_s'] / gb if gb else 0:.3f} CPU s/GB, proxy CPU {own:.0f}%{tls}{err}"
    per = r["cpu_s"] * 1e6 / r["requests"] if r["requests"] else 0
    unit = {"newconn": "conn/s", "tlsnew": "handshakes/s", "tlsresume": "handshakes/s"}.get(sc, "req/s")
    if sc == "tlsresume":
        tls += f", {100 * r.get('resumed', 0) / r['requests'] if r['requests'] else 0:.1f}% resumed"
    return (f"{r['requests'] / d:,.0f} {unit}, {per:.1f} CPU µs each, p50 {r['p50_us'] / 1000:.2f} ms, "
            f"p99 {r['p99_us'] / 1000:.2f} ms, proxy CPU {own:.0f}%{tls}{err}")


def shown_metrics(run: dict) -> list:
    load = any(x in LOAD_SCENARIOS for x in run["scenarios"])
    return [m for m in METRICS if (m[2] is None and (load or m[0] != "rss_load_mb")) or m[2] in run["scenarios"]]


def markdown_tables(run: dict, s: dict) -> str:
    ms = shown_metrics(run)
    base = run["baseline"]
    lines = ["| proxy | " + " | ".join(f"{m[1]} {'↑' if m[3] == 'up' else '↓'}" for m in ms) + " | errors |",
             "|---|" + "---:|" * (len(ms) + 1)]
    for name in run["proxies"]:
        med = s[name]["median"]
        cells = [fmt(med.get(m[0]), m[4]) for m in ms]
        lines.append(f"| {'**' + name + '**' if name == base else name} | " + " | ".join(cells)
                     + f" | {med.get('errors', 0):,} |")
    others = [n for n in run["proxies"] if n != base]
    if others:
        lines += ["", f"Ratios, {base} ÷ peer (▲ {base} better, ▼ worse; ↑/↓ which way is better):", "",
                  "| peer | " + " | ".join(f"{m[1]} {'↑' if m[3] == 'up' else '↓'}" for m in ms) + " |",
                  "|---|" + "---:|" * len(ms)]
        bm = s[base]["median"]
        for name in others:
            cells = []
            for m in ms:
                r = _ratio(bm.get(m[0]), s[name]["median"].get(m[0]))
                if r is None:
                    cells.append("—")
                else:
                    better = r > 1 if m[3] == "up" else r < 1
                    cells.append(f"{r:.2f}× {'▲' if better else ('▼' if abs(r - 1) > 1e-9 else '')}".strip())
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def conditions_table(run: dict, s: dict) -> str:
    scs = [x for x in run["scenarios"] if x in LOAD_SCENARIOS]
    head = ["proxy"] + [f"proxy CPU % ({sc})" for sc in scs] + [f"client core busy % ({sc})" for sc in scs] \
        + [f"other load on proxy core % ({sc})" for sc in scs] \
        + [f"client core µs/req ({sc})" for sc in scs if sc not in BULK_SCENARIOS] + ["start s"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name in run["proxies"]:
        med = s[name]["median"]
        starts = [r["start_s"] for r in run["runs"] if r["proxy"] == name and "start_s" in r]
        cells = [fmt(med.get(f"cpu_pct_{sc}"), 0) for sc in scs] \
            + [fmt(med.get(f"client_core_pct_{sc}"), 0) for sc in scs] \
            + [fmt(med.get(f"noise_pct_{sc}"), 0) for sc in scs] \
            + [fmt(med.get(f"client_us_{sc}"), 1) for sc in scs if sc not in BULK_SCENARIOS] \
            + [fmt(statistics.median(starts), 2) if starts else "—"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rounds_table(run: dict, s: dict) -> str:
    ms = [m for m in shown_metrics(run) if not m[0].startswith("rss_idle")]
    lines = ["| proxy | round | " + " | ".join(m[1] for m in ms) + " | errors |",
             "|---|---:|" + "---:|" * (len(ms) + 1)]
    for r in run["runs"]:
        rm = round_metrics(r)
        lines.append(f"| {r['proxy']} | {r['round']} | " + " | ".join(fmt(rm.get(m[0]), m[4]) for m in ms)
                     + f" | {rm.get('errors', 0):,} |")
    return "\n".join(lines)


def is_http_run(run: dict) -> bool:
    return all(x in HTTP_SCENARIOS for x in run["scenarios"])


def is_tls_run(run: dict) -> bool:
    return all(x in TLS_SCENARIOS for x in run["scenarios"])


def is_h2_run(run: dict) -> bool:
    return all(x in H2_SCENARIOS for x in run["scenarios"])


def run_kind(run: dict) -> str:
    if is_http_run(run):
        return "http"
    return "tls" if is_tls_run(run) else ("h2" if is_h2_run(run) else "l4")


def section_key(run: dict) -> str:
    return run_kind(run) + "-" + "-".join(run["scenarios"])


def spread_table(run: dict, s: dict) -> str:
    """Per proxy and metric: the range over rounds (min – max) and its width as a share of the
    median, so a ratio can be read against the noise of its two numbers."""
    ms = [m for m in shown_metrics(run) if not m[0].startswith("rss_idle")]
    lines = ["| proxy | " + " | ".join(m[1] for m in ms) + " |", "|---|" + "---:|" * len(ms)]
    for name in run["proxies"]:
        cells = []
        for m in ms:
            vals = s[name]["rounds"].get(m[0]) or []
            med = s[name]["median"].get(m[0])
            if not vals:
                cells.append("—")
            elif len(vals) == 1 or not med:
                cells.append(fmt(vals[0], m[4]))
            else:
                w = 100 * (max(vals) - min(vals)) / abs(med)
                cells.append(f"{fmt(min(vals), m[4])} – {fmt(max(vals), m[4])} (±{w / 2:.0f} %)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def negotiated(run: dict) -> dict:
    """What each proxy's TLS clients negotiated (version, suite, group), as reported by them."""
    out: dict = {}
    for r in run["runs"]:
        for sc, v in r.get("scenarios", {}).items():
            if v.get("tls"):
                out.setdefault(r["proxy"], {}).setdefault(v["tls"], set()).add(sc)
    return out


def section(run: dict, s: dict, svg_rel: str) -> str:
    m = run["machine"]
    key = section_key(run)
    base = run["baseline"]
    sc_desc = {
        "rps": f"`rps`: wrk -t1 -c{run['connections']} keep-alive, GET of a 12-byte body; `wrk --latency` percentiles",
        "newconn": f"`newconn`: wrk -t1 -c{run['connections']} with `Connection: close`, so each request is a new "
                   "connection through the relay (new conn/s = requests/s)",
        "bulk": f"`bulk`: bench/bulkclient.py, {run['bulk_connections']} keep-alive connections each fetching a "
                f"{run['bulk_mb']} MB file in a loop (1 MiB reads); GB = 10⁹ bytes",
        "idle": f"`idle`: bench/idleclient.py opens {run.get('idle_connections', '?')} connections through the "
                "relay (100 handshakes at a time), sends one keep-alive GET of the 12-byte body on each and reads "
                "the response, so both sides of every relayed connection are set up and have carried data; "
                "then holds them all idle for 1 s. Run on a freshly started proxy of its own",
        "http": f"`http`: wrk -t1 -c{run.get('http_connections', '?')} keep-alive through the HTTP proxy, GET of "
                "a 12-byte body; RSS MB keep-alive load = RSS after warm-up with those connections open",
        "http16k": f"`http16k`: wrk -t1 -c{run.get('http_connections', '?')} keep-alive, GET of a 16 KiB file",
        "httpclose": f"`httpclose`: wrk -t1 -c{run.get('http_connections', '?')} with `Connection: close`: a new "
                     "client connection per request while the proxy reuses its upstream connections",
        "https": f"`https`: wrk -t1 -c{run.get('http_connections', '?')} keep-alive over TLS 1.3 through the "
                 "TLS-terminating HTTP proxy, GET of a 12-byte body (handshakes only in the warm-up); RSS MB "
                 "HTTPS keep-alive load = RSS after warm-up with those connections open",
        "tlsnew": f"`tlsnew`: bench/tlsclient (rustls), {run.get('tls_connections', '?')} connections in flight, each "
                  "a new TCP connection and a full TLS 1.3 handshake, then close_notify and read to the "
                  "server's close (no request); handshakes/s per core = 10⁶ ÷ proxy CPU µs per handshake",
        "tlsresume": "`tlsresume`: the same, each connection resuming (PSK-DHE) with a session ticket the "
                     "server sent on an earlier connection; % resumed as the client saw it; resumed ÷ full "
                     "per core = CPU µs per full handshake ÷ CPU µs per resumed one, same proxy start",
        "tlsidle": f"`tlsidle`: bench/idleclient.py --tls opens {run.get('idle_connections', '?')} TLS connections "
                   "through the HTTPS proxy (100 handshakes at a time), one keep-alive GET of the 12-byte "
                   "body on each, then holds them idle for 1 s. Run on a freshly started proxy of its own",
        "tlspass": f"`tlspass`: bench/bulkclient.py --tls, {run['bulk_connections']} keep-alive TLS connections "
                   f"(SNI {'bulk.example.com'}) each fetching a {run['bulk_mb']} MB file in a loop through the "
                   "passthrough chain (the upstream nginx terminates TLS; the proxy relays ciphertext); "
                   "GB/s per core = 1 ÷ proxy CPU s/GB",
        "tlsterm": f"`tlsterm`: bench/bulkclient.py --tls, {run['bulk_connections']} keep-alive TLS connections "
                   f"each fetching a {run['bulk_mb']} MB file in a loop; the proxy terminates TLS and relays "
                   "the plaintext to the upstream (tcp_proxy); GB/s per core = 1 ÷ proxy CPU s/GB",
        "h2c": f"`h2c`: h2load -c{run.get('h2_connections', '?')} -m{run.get('h2_streams', '?')} (HTTP/2 "
               "cleartext, prior knowledge; closed loop) through the proxy to the HTTP/1.1 upstream, GET of "
               "a 12-byte body; p99 from h2load's per-request log; RSS MB h2c load = RSS after warm-up",
        "grpc": f"`grpc`: h2load at a fixed {fmt(run.get('grpc_rate'), 0)} calls/s over "
                f"{run.get('grpc_connections', '?')} h2c connections (`--rps` per connection, up to 10 "
                "streams in flight each), each a gRPC unary call: POST of one 100-byte message "
                "(`content-type: application/grpc`, `te: trailers`) through the proxy over HTTP/2 to the "
                "upstream nginx's h2c listener, which answers one 100-byte message and `grpc-status: 0` "
                "in trailers (answers of another size count as errors); CPU per call and p50/p99 at that "
                "rate (from h2load's per-request log)",
        "h2idle": f"`h2idle`: bench/idleclient.py --h2 opens {run.get('idle_connections', '?')} HTTP/2 "
                  "(prior knowledge) connections through the h2c proxy (100 at a time); on each the SETTINGS "
                  "exchange (both acknowledged) and one GET of the 12-byte body on stream 1; then holds them "
                  "idle for 1 s. Run on a freshly started proxy of its own; the proxy's upstream "
                  "HTTP/1.1 connections (at most 100) are counted too",
    }
    load = [x for x in run["scenarios"] if x in LOAD_SCENARIOS]
    timing = (f"{run['warmup']:.0f} s warm-up + {run['duration']:.0f} s measured per scenario; " if load else "")
    kind = run_kind(run)
    if kind == "http":
        title = "HTTP/1.1 proxy"
        layout = ("nginx `worker_processes 1` proxy_pass with upstream `keepalive`, HAProxy `nbthread 1` "
                  "mode http with `http-reuse always`, shardproxy/Envoy http_connection_manager + router, "
                  "each with its default buffers")
    elif kind == "tls":
        title = "TLS 1.3"
        layout = ("TLS 1.3 only, one self-signed ECDSA P-256 certificate, each proxy's TLS defaults otherwise "
                  "(session tickets on); `https`/`tlsnew`/`tlsresume`/`tlsidle`: the HTTP proxy of the HTTP "
                  "runs behind TLS termination (nginx `listen ... ssl`, HAProxy `bind ... ssl crt`, a "
                  "DownstreamTlsContext), default buffers; `tlspass`: tls_inspector + `server_names` chain "
                  "(nginx `ssl_preread`, HAProxy `req.ssl_sni`); `tlsterm`: tcp_proxy behind a "
                  "DownstreamTlsContext (nginx stream `listen ... ssl`, HAProxy mode tcp `bind ... ssl crt`); "
                  "the relays with the L4 runs' buffers. Clients offer X25519 and TLS_AES_128_GCM_SHA256 "
                  "only (OPENSSL_CONF for wrk and Python; bench/tlsclient likewise), so every proxy runs "
                  "the same key exchange and cipher")
    elif kind == "h2":
        title = "HTTP/2 and gRPC"
        layout = ("cleartext HTTP/2 with prior knowledge from the clients: nginx `worker_processes 1` "
                  "`listen ... http2` (h2c/h2idle: proxy_pass HTTP/1.1 to an upstream with `keepalive "
                  "1024`; grpc: `grpc_pass`), HAProxy `nbthread 1` `bind ... proto h2` mode http with "
                  "`http-reuse always` (grpc: `server ... proto h2`), shardproxy/Envoy http_connection_manager "
                  "with `codec_type: AUTO` + router (grpc: the cluster with HttpProtocolOptions "
                  "`http2_protocol_options`), each with its default buffers and HTTP/2 settings")
    else:
        title = "L4 relay"
        layout = "nginx `worker_processes 1` stream module, HAProxy `nbthread 1` mode tcp"
    out = [f"<!-- bench:begin {key} -->",
           f"## {title} — {', '.join(run['scenarios'])}", "",
           f"- **Date**: {run['started_at']} → {run['finished_at']} (UTC)",
           f"- **Machine**: `{m['hostname']}`, {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, {m['kernel']}; "
           f"load average {' '.join(m['loadavg'])} at start, {' '.join(run['loadavg_end'])} at end",
           f"- **Command**: `{run['command']}`",
           f"- **Proxies**: " + "; ".join(f"{n} {run['versions'][n]} ({run['buffers'][n]})" for n in run["proxies"]),
           f"- **Layout**: each proxy one worker pinned to core {run['proxy_core']} (shardproxy/Envoy "
           f"`--concurrency 1`, {layout}); "
           f"load generator and upstream nginx (HTTP, sendfile{'; its TLS listener for tlspass' if 'tlspass' in run['scenarios'] else ''}{'; its h2c gRPC listener for grpc' if 'grpc' in run['scenarios'] else ''}) pinned to core {run['client_core']}. "
           f"{run['rounds']} rounds, order rotated each round, {timing}medians over rounds.",
           "- **Scenarios**: " + "; ".join(sc_desc[x] for x in run["scenarios"]) + ".",
           "- **Metrics**: CPU = utime+stime of the proxy's process tree (/proc/<pid>/stat) over the "
           "measured window, divided by requests, connections or GB moved. RSS = VmRSS of the tree: "
           "idle 0.5 s after start" + (", loaded = after warm-up (largest over scenarios)" if load else "")
           + "." + (" KiB per idle conn = (RSS with the connections open and idle − RSS just before "
                    "opening them) ÷ connections held, KiB = 1024 bytes; the client and the upstream "
                    "are not counted." if set(run["scenarios"]) & set(IDLE_SCENARIOS) else ""),
           ""]
    neg = negotiated(run)
    if neg:
        out[-1:-1] = ["- **Negotiated** (as the clients report it): " + "; ".join(
            f"{n}: " + ", ".join(f"{t} ({'/'.join(sorted(scs))})" for t, scs in sorted(neg[n].items()))
            for n in run["proxies"] if n in neg)]
    if run.get("note"):
        out += [f"**Note**: {run['note']}", ""]
    if run["skipped"]:
        out += ["**Skipped**: " + "; ".join(run["skipped"]), ""]
    noise = [v for n in run["proxies"] for k, v in s[n]["median"].items()
             if k.startswith("noise_pct_") and v is not None]
    if noise and statistics.median(noise) > 20:
        out += [f"**Noisy run**: busy time on the proxy core not charged to the proxy was "
                f"{statistics.median(noise):.0f} % (median; loopback softirq plus other processes on the "
                "machine). Throughput and latency moved with that load; CPU per request / per GB are the "
                "steadier comparison.", ""]
    out += [markdown_tables(run, s), ""]
    if run["rounds"] > 1:
        out += [f"Spread over the {run['rounds']} rounds: min – max (± half the range as a share of the "
                "median):", "", spread_table(run, s), ""]
    fails = [(n, f) for n in run["proxies"] for f in s[n]["failures"]]
    if fails:
        out += ["**Failures** (rounds in which a proxy failed count only the scenarios it completed):", ""]
        for n, f in fails:
            first, _, rest = f.partition("\n")
            out.append(f"- {n}: {first}")
            if rest.strip():
                out += ["", "  ```", *("  " + ln for ln in rest.splitlines()[-10:]), "  ```"]
        out.append("")
    out += [f"![{key} chart]({svg_rel})", "",
            "<details><summary>Conditions: proxy CPU, client core load, other load on the proxy core</summary>",
            "", "Proxy CPU near 100 % means the proxy was the bottleneck; client core near 100 % means the "
            "load generator + upstream were. Other load on the proxy core is busy time not used by the "
            "proxy (softirq, other processes on the machine): high values make that run noisy. Client core "
            "µs/req is the client core's busy time per request: load generator, upstream, and the kernel work "
            "of delivering to (and waking) the proxy's sockets, which the sending process pays.", "",
            conditions_table(run, s), "", "</details>", "",
            "<details><summary>Per-round values</summary>", "", rounds_table(run, s), "", "</details>",
            f"<!-- bench:end {key} -->"]
    return "\n".join(out)


HEADER = """# shardproxy bench results

Produced by `bench/bench.py` (how to run: `bench/README.md`). Each section is one run type (a set
of scenarios); running that type again replaces its section and keeps the others. Ratios compare
shardproxy with peers measured in the same run, on the same machine (DESIGN.md, style rule 10):
absolute numbers from different machines or runs are not comparable.
"""


def write_results(path: str, run: dict, s: dict, svg_rel: str) -> None:
    text = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    if not text.strip():
        text = HEADER
    key = section_key(run)
    new = section(run, s, svg_rel)
    pat = re.compile(rf"<!-- bench:begin {re.escape(key)} -->.*?<!-- bench:end {re.escape(key)} -->", re.S)
    if pat.search(text):
        text = pat.sub(lambda _: new, text)
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    with open(path, "w") as f:
        f.write(text)


# ---------------------------------------------------------------------------------------------
# SVG: one panel per metric, a horizontal bar per proxy, value and ratio beside it.

def svg(run: dict, s: dict) -> str:
    ms = [m for m in shown_metrics(run) if any(s[n]["median"].get(m[0]) is not None for n in run["proxies"])]
    names = run["proxies"]
    base = run["baseline"]
    color = {n: COLORS[i % len(COLORS)] for i, n in enumerate(names)}
    cols, pw, label_w, bar_w = 2, 470, 90, 230
    row_h, top = 20, 30
    ph = top + row_h * len(names) + 14
    head_h = 84
    rows = (len(ms) + cols - 1) // cols
    W, H = cols * pw + 20, head_h + rows * ph + 10
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="#ffffff"/>',
         f'<text x="10" y="22" font-size="16" font-weight="bold">shardproxy '
         f'{ {"http": "HTTP/1.1", "tls": "TLS 1.3", "h2": "HTTP/2 + gRPC", "l4": "L4"}[run_kind(run)]} bench — '
         f'{escape(", ".join(run["scenarios"]))} — {escape(run["started_at"][:10])}</text>',
         f'<text x="10" y="40" fill="#57606a">medians of {run["rounds"]} rounds'
         f'{"" if set(run["scenarios"]) <= set(IDLE_SCENARIOS) else " × %.0f s" % run["duration"]}, '
         f'one proxy core; ↑ higher is better, ↓ lower is better</text>',
         f'<text x="10" y="56" fill="#57606a">×N = {escape(base)} ÷ peer: green where {escape(base)} is better, '
         'red where it is worse</text>']
    x = 10
    for n in names:
        o.append(f'<rect x="{x}" y="66" width="10" height="10" fill="{color[n]}"/>'
                 f'<text x="{x + 14}" y="75">{escape(n)}</text>')
        x += 30 + 8 * len(n)
    for i, m in enumerate(ms):
        key, label, _, better, dec = m
        px, py = 10 + (i % cols) * pw, head_h + (i // cols) * ph
        vals = {n: s[n]["median"].get(key) for n in names}
        vmax = max((v for v in vals.values() if v is not None), default=0) or 1
        o.append(f'<rect x="{px}" y="{py}" width="{pw - 10}" height="{ph - 6}" fill="#f6f8fa" stroke="#d0d7de"/>')
        o.append(f'<text x="{px + 8}" y="{py + 18}" font-weight="bold">{escape(label)} '
                 f'{"↑" if better == "up" else "↓"}</text>')
        bv = vals.get(base)
        for j, n in enumerate(names):
            y = py + top + j * row_h
            v = vals[n]
            o.append(f'<text x="{px + 8}" y="{y + 12}">{escape(n)}</text>')
            if v is None:
                o.append(f'<text x="{px + label_w}" y="{y + 12}" fill="#57606a">not measured</text>')
                continue
            w = max(1.0, bar_w * v / vmax)
            o.append(f'<rect x="{px + label_w}" y="{y}" width="{w:.1f}" height="{row_h - 5}" fill="{color[n]}"/>')
            txt = fmt(v, dec)
            o.append(f'<text x="{px + label_w + w + 4:.1f}" y="{y + 12}">{escape(txt)}</text>')
            if n != base and bv is not None and v:
                r = bv / v
                good = r > 1 if better == "up" else r < 1
                c = "#1a7f37" if good else ("#cf222e" if abs(r - 1) > 0.005 else "#57606a")
                o.append(f'<text x="{px + pw - 18}" y="{y + 12}" text-anchor="end" fill="{c}" '
                         f'font-weight="bold">×{r:.2f}</text>')
    o.append("</svg>")
    return "\n".join(o)


def write_svg(path: str, run: dict, s: dict) -> None:
    with open(path, "w") as f:
        f.write(svg(run, s) + "\n")
