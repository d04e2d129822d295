#!/usr/bin/env python3
"""Runtime comparison: the same minimal HTTP/1.1 server on shardproxy's shard runtime (rt) and
on compio, measured alternately in one run, so rt's place in the proxy stays justified by
numbers (issue 12 part 5; bench/README.md, "Runtime comparison").

    python3 bench/runtime_compare.py                         # 5 rounds x 2 scenarios x 10 s, ~3 minutes
    python3 bench/runtime_compare.py --variants rt,compio,rt-epoll --rounds 3

Builds bench/runtime-compare in release (its own workspace: compio never enters the proxy's
dependency tree), then each round starts each server in turn (the order alternates between
rounds) on the server core, runs bench.py's wrk scenarios against it from the client core —
`keepalive` (bench's `http`: wrk keep-alive, --connections) and `close` (bench's `httpclose`:
`Connection: close`, a new connection per request) — and stops it; `timers` runs the
binary's timer microbench instead (--timer-tasks tasks each sleeping 0.5–1.5 ms inside a 30 s
timeout, over and over: one timer fired and one armed and cancelled per wake-up). Reports
requests (wake-ups) per second and the server's CPU µs per request (wake-up) for each, the
ratio of each variant to rt in the same round, and the median over rounds. Prints Markdown;
--json keeps the raw numbers.

With --perf, each server also runs each scenario once more (--perf-duration) under `perf stat`
counting kernel events — syscalls, io_uring submissions and internal poll arms, context
switches — per request: what each runtime asks of the kernel, which on a loaded machine
repeats better than CPU time does.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402
import procstat  # noqa: E402
import report  # noqa: E402
import scenarios  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CRATE = os.path.join(HERE, "runtime-compare")
BASELINE = "rt"
# variant: (binary, extra environment)
VARIANTS = {
    "rt": ("rt-server", {"RT_BACKEND": "io_uring"}),
    "compio": ("compio-server", {}),
    "rt-epoll": ("rt-server", {"RT_BACKEND": "epoll"}),
}
# this tool's scenario: bench.py's scenario it runs
SCENARIOS = {"keepalive": "http", "close": "httpclose"}
TIMERS = "timers"
# perf stat events (--perf), counted per request: the name shown for each.
PERF_EVENTS = {
    "raw_syscalls:sys_enter": "syscalls",
    "io_uring:io_uring_submit_req": "SQEs",
    "io_uring:io_uring_poll_arm": "poll arms",
    "context-switches": "context switches",
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="runtime_compare.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--variants", default="rt,compio", help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--scenarios", default="keepalive,close,timers",
                    help=f"comma list of {', '.join(SCENARIOS)}, {TIMERS}")
    ap.add_argument("--rounds", type=int, default=5, help="rounds; the order of the servers alternates")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds measured per scenario")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each")
    ap.add_argument("--connections", type=int, default=100, help="wrk connections")
    ap.add_argument("--timer-tasks", type=int, default=1000, help="tasks of the timers scenario")
    ap.add_argument("--threads", type=int, default=1,
                    help="server threads, one per core of --server-cores (each its own SO_REUSEPORT socket)")
    ap.add_argument("--server-cores", default="0", help="cores the server runs on (taskset list)")
    ap.add_argument("--client-core", type=int, default=1, help="core of wrk")
    ap.add_argument("--wrk-bin", default="wrk")
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", os.path.join(CRATE, "target")),
                    help="cargo target dir of bench/runtime-compare")
    ap.add_argument("--perf", action="store_true",
                    help="also count kernel events per request with perf stat (one more run each)")
    ap.add_argument("--perf-duration", type=float, default=3.0, help="seconds of each --perf run")
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--json", default=None, help="write the raw numbers to this file")
    a = ap.parse_args(argv)
    a.variant_list = [v.strip() for v in a.variants.split(",") if v.strip()]
    a.scenario_list = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    for v in a.variant_list:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r} (known: {', '.join(VARIANTS)})")
    if BASELINE not in a.variant_list:
        ap.error(f"the variants must include {BASELINE} (the ratios' baseline)")
    for s in a.scenario_list:
        if s not in SCENARIOS and s != TIMERS:
            ap.error(f"unknown scenario {s!r} (known: {', '.join(SCENARIOS)}, {TIMERS})")
    if a.rounds < 1 or a.duration < 1 or a.threads < 1:
        ap.error("--rounds, --duration and --threads must be at least 1")
    # What bench.load and bench.scenarios read: the server is the "proxy" there.
    a.http_connections = a.connections
    a.proxy_core = int(a.server_cores.split(",")[0].split("-")[0])
    return a


def build(args) -> None:
    argv = ["cargo", "build", "--release", "--manifest-path", os.path.join(CRATE, "Cargo.toml")]
    env = dict(os.environ, CARGO_TARGET_DIR=args.target_dir)
    if subprocess.run(argv, env=env).returncode != 0:
        sys.exit("runtime_compare: the build failed")


def compio_version() -> str:
    """compio's version in the comparison's Cargo.lock."""
    with open(os.path.join(CRATE, "Cargo.lock")) as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if line == 'name = "compio"':
            return lines[i + 1].split('"')[1]
    return "unknown"


def command(variant, args) -> list[str]:
    """The variant's binary with its environment; its mode's flags follow."""
    binary, env = VARIANTS[variant]
    return ["env"] + [f"{k}={v}" for k, v in env.items()] + [os.path.join(args.target_dir, "release", binary)]


def measure_variant(variant, args, tmp, round_no, prog, label) -> dict:
    """One variant's turn in a round: its server for the HTTP scenarios, then its timers."""
    out = {"variant": variant, "round": round_no, "scenarios": {}}
    if any(sc in SCENARIOS for sc in args.scenario_list):
        serve(variant, args, tmp, round_no, prog, label, out["scenarios"])
    if TIMERS in args.scenario_list:
        prog.phase(f"{label} · {TIMERS}: {args.warmup:.0f}s warm-up, {args.duration:.0f}s measured")
        r = run_timers(variant, args, prog.tick)
        out["scenarios"][TIMERS] = r
        prog.say(f"{label} · {TIMERS}: {r['requests'] / r['duration_s']:,.0f} wake-ups/s, "
                 f"{r['cpu_s'] * 1e6 / r['requests']:.2f} CPU µs each")
    return out


def run_timers(variant, args, poll) -> dict:
    """The timer microbench, pinned like the server; wake-ups count as requests."""
    argv = ["taskset", "-c", args.server_cores] + command(variant, args) + [
        "--timers", str(args.timer_tasks), "--warmup", str(args.warmup), "--seconds", str(args.duration)]
    r = scenarios._parse(scenarios._run(argv, args.warmup + args.duration + 30, poll))
    if not r["wakeups"]:
        raise RuntimeError(f"{variant} {TIMERS}: no wake-up")
    return {"requests": r["wakeups"], "cpu_s": r["cpu_s"], "duration_s": r["duration_s"], "errors": 0}


def serve(variant, args, tmp, round_no, prog, label, results: dict) -> None:
    """Starts the variant's server, runs every HTTP scenario against it, stops it."""
    port = bench.free_port()
    argv = command(variant, args) + ["--port", str(port), "--threads", str(args.threads)]
    log = os.path.join(tmp, f"{variant}-r{round_no}.log")
    p = bench.Started.start(argv, log, args.server_cores)
    try:
        bench.wait_ready(p, port, 10, log)

        def poll():
            prog.tick()
            if p.poll() is not None:
                raise RuntimeError(f"{variant} exited with code {p.returncode}:\n{bench.tail(log)}")

        for sc in (sc for sc in args.scenario_list if sc in SCENARIOS):
            r = bench.load(SCENARIOS[sc], p.pid, port, args, prog, f"{label} · {sc}", poll)
            if r["errors"] or not r["requests"]:
                raise RuntimeError(f"{variant} {sc}: {r['requests']} requests, {r['errors']} errors "
                                   f"{r.get('error_detail', '')}")
            results[sc] = r
            prog.say(f"{label} · {sc}: {report.one_line(SCENARIOS[sc], r)}")
            if args.perf:
                prog.phase(f"{label} · {sc}: perf stat {args.perf_duration:.0f}s")
                r["events_per_req"] = count_events(p.pid, port, sc, args, tmp, poll)
    finally:
        bench.Started.stop(p)


def count_events(pid: int, port: int, sc: str, args, tmp: str, poll) -> dict:
    """Kernel events per request of the server process (PERF_EVENTS) over one more run of the
    scenario under `perf stat`."""
    path = os.path.join(tmp, "perf.csv")
    perf = subprocess.Popen(["perf", "stat", "-x,", "-e", ",".join(PERF_EVENTS), "-p", str(pid), "-o", path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = scenarios.run(SCENARIOS[sc], port, args.perf_duration, args, poll)
    finally:
        perf.send_signal(signal.SIGINT)
        perf.wait(10)
    counts = {}
    with open(path) as f:
        for line in f:
            fields = line.strip().split(",")
            if len(fields) > 2 and fields[2] in PERF_EVENTS and fields[0].replace(".", "").isdigit():
                counts[fields[2]] = float(fields[0]) / max(1, r["requests"])
    if set(counts) != set(PERF_EVENTS):
        raise RuntimeError(f"perf stat counted {sorted(counts)} of {sorted(PERF_EVENTS)} (root, tracepoints?)")
    return counts


def metrics(r: dict) -> dict:
    """Requests/s and CPU µs per request of one scenario's measurement."""
    return {"req_s": r["requests"] / r["duration_s"], "cpu_us_req": r["cpu_s"] * 1e6 / r["requests"]}


def summarise(runs: list[dict], variants: list[str], scenarios: list[str]) -> dict:
    """Per scenario and variant: the medians over rounds, and the median over rounds of the
    variant ÷ rt ratio of the same round (pairing by round cancels what drifts on a shared
    machine)."""
    by = {(r["round"], r["variant"]): r["scenarios"] for r in runs}
    rounds = sorted({r["round"] for r in runs})
    out = {}
    for sc in scenarios:
        out[sc] = {}
        for v in variants:
            own = [metrics(by[(n, v)][sc]) for n in rounds if sc in by.get((n, v), {})]
            paired = [(metrics(by[(n, v)][sc]), metrics(by[(n, BASELINE)][sc])) for n in rounds
                      if sc in by.get((n, v), {}) and sc in by.get((n, BASELINE), {})]
            if not own:
                continue
            entry = {k: statistics.median(m[k] for m in own) for k in ("req_s", "cpu_us_req")}
            entry["rounds"] = len(own)
            for k in ("req_s", "cpu_us_req"):
                ratios = [m[k] / b[k] for m, b in paired]
                entry[f"{k}_ratios"] = ratios
                entry[f"{k}_ratio"] = statistics.median(ratios) if ratios else None
            events = [by[(n, v)][sc]["events_per_req"] for n in rounds
                      if "events_per_req" in by.get((n, v), {}).get(sc, {})]
            if events:
                entry["events_per_req"] = {e: statistics.median(x[e] for x in events) for e in PERF_EVENTS}
            out[sc][v] = entry
    return out


def markdown(run: dict, summary: dict) -> str:
    m = run["machine"]
    lines = [
        f"`{run['command']}` — {run['started_at']}, {m['cpu']}, {m['cores']} cores, {m['kernel']}; "
        f"load average {' '.join(m['loadavg'])} at the start, {' '.join(run['loadavg_end'])} at the end; "
        f"compio {run['compio']}; {run['rounds']} rounds × {run['duration']:.0f} s, wrk -c{run['connections']} "
        f"on core {run['client_core']}, server {run['threads']} thread(s) on cores {run['server_cores']}.",
        "",
        "| scenario | runtime | req/s | CPU µs/req | req/s ÷ rt | CPU/req ÷ rt | CPU/req ÷ rt per round |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for sc, per in summary.items():
        for v, e in per.items():
            ratio = (lambda x: "—" if x is None else f"{x:.3f}")
            rounds = " ".join(f"{x:.2f}" for x in e["cpu_us_req_ratios"]) if v != BASELINE else ""
            lines.append(f"| {sc} | {v} | {e['req_s']:,.0f} | {e['cpu_us_req']:.2f} | "
                         f"{ratio(e['req_s_ratio'])} | {ratio(e['cpu_us_req_ratio'])} | {rounds} |")
    if any("events_per_req" in e for per in summary.values() for e in per.values()):
        lines += ["", "| scenario | runtime | " + " | ".join(f"{n}/req" for n in PERF_EVENTS.values()) + " |",
                  "|---|---|" + "---:|" * len(PERF_EVENTS)]
        for sc, per in summary.items():
            for v, e in per.items():
                if "events_per_req" in e:
                    lines.append(f"| {sc} | {v} | " + " | ".join(
                        f"{e['events_per_req'][name]:.2f}" for name in PERF_EVENTS) + " |")
    busy = [(r["variant"], sc, s.get("proxy_core_busy"), s.get("client_core_busy"))
            for r in run["runs"] for sc, s in r["scenarios"].items()]
    if busy:
        def span(i):
            values = [b[i] for b in busy if b[i] is not None]
            return f"{100 * min(values):.0f}–{100 * max(values):.0f} %" if values else "n/a"
        lines += ["", f"Server core busy {span(2)}, client core busy {span(3)} (all measurements; "
                      "the whole core, other tenants included). Values are medians over rounds; "
                      "ratios are the median of the per-round ratios."]
    if TIMERS in summary:
        lines += ["", f"`{TIMERS}`: req/s is wake-ups per second of {run['timer_tasks']} tasks on one thread "
                      "(each sleeping 0.5–1.5 ms inside a 30 s timeout), CPU µs/req is per wake-up."]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.perf and not shutil.which("perf"):
        sys.exit("runtime_compare: --perf needs perf (Debian: apt-get install linux-perf)")
    if not args.no_build:
        build(args)
    command = "python3 bench/runtime_compare.py" + (
        "" if not (sys.argv[1:] if argv is None else argv) else " " + shlex.join(sys.argv[1:] if argv is None else argv))
    run = {"command": command, "machine": procstat.machine_info(),
           "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "compio": compio_version(), "rounds": args.rounds, "duration": args.duration,
           "connections": args.connections, "timer_tasks": args.timer_tasks, "threads": args.threads, "server_cores": args.server_cores,
           "client_core": args.client_core, "runs": []}
    per_server = len(args.scenario_list) * (args.warmup + args.duration + 1) + 1
    prog = bench.Progress(args.rounds * len(args.variant_list) * per_server)
    failed = False
    with tempfile.TemporaryDirectory(prefix="runtime-compare-") as tmp:
        try:
            for n in range(1, args.rounds + 1):
                shift = (n - 1) % len(args.variant_list)
                order = args.variant_list[shift:] + args.variant_list[:shift]
                for i, v in enumerate(order):
                    label = f"round {n}/{args.rounds} · {v} ({i + 1}/{len(order)})"
                    try:
                        run["runs"].append(measure_variant(v, args, tmp, n, prog, label))
                    except RuntimeError as e:
                        failed = True
                        prog.say(f"{label} · FAILED: {e}")
        finally:
            bench.Started.stop_all()
    run["loadavg_end"] = procstat.machine_info()["loadavg"]
    summary = summarise(run["runs"], args.variant_list, args.scenario_list)
    print(markdown(run, summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(run, summary=summary), f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
