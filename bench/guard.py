#!/usr/bin/env python3
"""Performance guard: fails when shardproxy's HTTP/1.1 keep-alive CPU per request exceeds
`--bound` (1.3) times nginx's, both measured in the same run (tests/run.sh runs it).

    cargo build --release && python3 bench/guard.py      # ≈ 65 s, ≈ 2 minutes with a re-measure

It runs bench.py's `http` scenario (wrk keep-alive, 12-byte responses, one proxy worker on the
proxy core) for shardproxy and nginx, `--rounds` rounds that alternate which proxy goes first,
and compares the two proxies round by round: the ratio of a round is shardproxy's CPU µs per
request over nginx's in that round, and the guard's ratio is the median of those. Pairing by
round cancels what drifts on a shared machine (other tenants' load, frequency); the median
drops a round spoiled by a burst on either side. A ratio above the bound by at most
`--margin` is re-measured once, and the verdict is then the median over both measurements'
rounds. Exit code 0 within the bound, 1 above it or when a proxy or a tool is missing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402
import report  # noqa: E402

SCENARIO = "http"
METRIC = f"{SCENARIO}_cpu_us_req"
PEERS = ("shardproxy", "nginx")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="guard.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--bound", type=float, default=1.3,
                    help="largest shardproxy / nginx CPU per request that passes")
    ap.add_argument("--margin", type=float, default=0.05,
                    help="a ratio at most this share above the bound is re-measured once")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per measurement (odd: a true median)")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds measured per proxy and round")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up before each")
    ap.add_argument("--proxy-bin", default=None, help="shardproxy binary (default target/release/shardproxy)")
    ap.add_argument("--nginx-bin", default=None)
    ap.add_argument("--wrk-bin", default="wrk")
    return ap.parse_args(argv)


def bench_argv(args) -> list[str]:
    argv = ["--scenarios", SCENARIO, "--peers", ",".join(PEERS), "--rounds", str(args.rounds),
            "--duration", str(args.duration), "--warmup", str(args.warmup), "--wrk-bin", args.wrk_bin,
            "--no-write"]
    for flag, value in (("--proxy-bin", args.proxy_bin), ("--nginx-bin", args.nginx_bin)):
        if value:
            argv += [flag, value]
    return argv


def measure(args) -> list[tuple[float, float]]:
    """One bench run: (shardproxy, nginx) CPU µs per request for each round. Exits 1 when a
    proxy is missing or failed: a guard that measured nothing must not pass."""
    bench_args = bench.parse_args(bench_argv(args))
    _, missing = bench.resolve_peers(bench_args)
    if missing:
        incomplete(missing)
    run = bench.run_rounds(bench_args)
    problems = [f"{r['proxy']} round {r['round']}: {f}" for r in run["runs"] for f in r.get("failures", [])]
    per_round: dict[int, dict[str, float]] = {}
    for r in run["runs"]:
        value = report.round_metrics(r).get(METRIC)
        if value is not None:
            per_round.setdefault(r["round"], {})[r["proxy"]] = value
    pairs = [(v["shardproxy"], v["nginx"]) for _, v in sorted(per_round.items()) if len(v) == len(PEERS)]
    if problems or len(pairs) < args.rounds:
        incomplete(problems)
    return pairs


def incomplete(problems: list[str]):
    print("guard: FAIL: the measurement is incomplete:", *problems, sep="\n  ")
    sys.exit(1)


def verdict_ratio(pairs: list[tuple[float, float]]) -> float:
    """The median over rounds of shardproxy's CPU per request over nginx's in the same round."""
    return statistics.median(sp / ng for sp, ng in pairs)


def show(pairs: list[tuple[float, float]], bound: float) -> float:
    ratio = verdict_ratio(pairs)
    for i, (sp, ng) in enumerate(pairs, 1):
        print(f"guard: round {i}: shardproxy {sp:.2f} µs/req, nginx {ng:.2f} µs/req, ratio {sp / ng:.3f}")
    sp_med = statistics.median(sp for sp, _ in pairs)
    ng_med = statistics.median(ng for _, ng in pairs)
    print(f"guard: HTTP/1.1 keep-alive CPU per request over {len(pairs)} rounds (medians): "
          f"shardproxy {sp_med:.2f} µs, nginx {ng_med:.2f} µs; median per-round ratio "
          f"{ratio:.3f} (bound {bound})")
    return ratio


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.rounds < 1 or args.bound <= 0 or args.margin < 0:
        sys.exit("guard: --rounds must be at least 1, --bound positive, --margin not negative")
    pairs = measure(args)
    ratio = show(pairs, args.bound)
    if args.bound < ratio <= args.bound * (1 + args.margin):
        print(f"guard: {ratio:.3f} is within {args.margin:.0%} above the bound: measuring once more")
        pairs += measure(args)
        ratio = show(pairs, args.bound)
    if ratio > args.bound:
        print(f"guard: FAIL: shardproxy spends {ratio:.2f}x nginx's CPU per request (bound {args.bound}x)")
        return 1
    print(f"guard: PASS: shardproxy spends {ratio:.2f}x nginx's CPU per request (bound {args.bound}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
