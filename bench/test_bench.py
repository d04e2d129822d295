"""Offline checks of the harness: config rendering, summaries, RESULTS.md sections, the SVG."""
import os
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402


def fake_run(proxies=("shardproxy", "nginx"), scenarios=("rps", "bulk")):
    runs = []
    for rnd in (1, 2, 3):
        for i, p in enumerate(proxies):
            sc = {}
            if "rps" in scenarios:
                sc["rps"] = {"requests": 100000 * (i + 1), "bytes": 1, "duration_s": 10.0, "errors": 0,
                             "p50_us": 500, "p90_us": 800, "p99_us": 2000, "max_us": 9000,
                             "cpu_s": 1.0 + rnd / 10, "rss_warm": 20 << 20, "proxy_core_busy": 0.5,
                             "client_core_busy": 1.0}
            if "bulk" in scenarios:
                sc["bulk"] = {"requests": 100, "bytes": 10 ** 10, "duration_s": 10.0, "errors": 0,
                              "cpu_s": 7.0, "rss_warm": 22 << 20, "proxy_core_busy": 0.9,
                              "client_core_busy": 0.9}
            for name in ("http", "http16k", "httpclose"):
                if name in scenarios:
                    # shardproxy: 10 µs/req; the peer 20 µs/req; 50k req/s both.
                    sc[name] = {"requests": 500000, "bytes": 1, "duration_s": 10.0, "errors": 0,
                                "p50_us": 400, "p90_us": 700, "p99_us": 1000 * (i + 1), "max_us": 5000,
                                "cpu_s": 5.0 * (i + 1), "rss_warm": (8 + i) << 20,
                                "proxy_core_busy": 0.6, "client_core_busy": 1.0}
            if "idle" in scenarios:
                # shardproxy grows 2000 × 8 KiB, the peer 2000 × (8 + 8·(i)) KiB; 1990 held.
                sc["idle"] = {"requests": 1990, "bytes": 1, "duration_s": 0.5, "errors": 10,
                              "connections": 2000, "held": 1990, "alive": 1990,
                              "rss_before": 10 << 20, "rss_open": (10 << 20) + 1990 * 8192 * (i + 1)}
            runs.append({"proxy": p, "round": rnd, "scenarios": sc, "rss_idle": 10 << 20, "start_s": 0.2})
    return {"command": "python3 bench/bench.py", "started_at": "2025-01-01T00:00:00+00:00",
            "finished_at": "2025-01-01T00:10:00+00:00",
            "machine": {"hostname": "h", "cpu": "cpu", "cores": 2, "mem_gib": 4, "kernel": "Linux",
                        "loadavg": ["0", "0", "0"]}, "loadavg_end": ["0", "0", "0"],
            "versions": {p: "1" for p in proxies}, "buffers": {p: "b" for p in proxies},
            "skipped": [], "baseline": proxies[0], "proxies": list(proxies),
            "scenarios": list(scenarios), "rounds": 3, "duration": 10, "warmup": 2,
            "connections": 64, "http_connections": 50, "bulk_connections": 4, "idle_connections": 2000, "bulk_mb": 100, "buffer_bytes": 65536,
            "proxy_core": 0, "client_core": 1, "runs": runs}


class Tests(unittest.TestCase):
    def test_medians_and_ratios(self):
        run = fake_run()
        s = report.summarise(run)
        self.assertAlmostEqual(s["shardproxy"]["median"]["req_s"], 10000)
        self.assertAlmostEqual(s["nginx"]["median"]["req_s"], 20000)
        self.assertAlmostEqual(s["nginx"]["median"]["cpu_us_req"], 1.2e6 / 200000)
        self.assertAlmostEqual(s["nginx"]["median"]["gb_s"], 1.0)
        md = report.markdown_tables(run, s)
        self.assertIn("0.50× ▼", md)  # req/s: shardproxy has half nginx's

    def test_idle_kib_per_connection(self):
        run = fake_run(scenarios=("idle",))
        s = report.summarise(run)
        self.assertAlmostEqual(s["shardproxy"]["median"]["kib_idle_conn"], 8.0)
        self.assertAlmostEqual(s["nginx"]["median"]["kib_idle_conn"], 16.0)
        md = report.markdown_tables(run, s)
        self.assertIn("KiB per idle conn ↓", md)
        self.assertIn("0.50× ▲", md)  # half nginx's memory per connection: better
        self.assertNotIn("RSS loaded", md)  # no timed load ran
        text = report.section(run, s, "results.svg")
        self.assertIn("<!-- bench:begin l4-idle -->", text)
        self.assertNotIn("warm-up", text)
        ET.fromstring(report.svg(run, s))

    def test_results_section_replaced_not_duplicated(self):
        run = fake_run()
        s = report.summarise(run)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "RESULTS.md")
            report.write_results(path, run, s, "results.svg")
            other = fake_run(scenarios=("rps",))
            report.write_results(path, other, report.summarise(other), "results.svg")
            report.write_results(path, run, s, "results.svg")
            text = open(path).read()
            self.assertEqual(text.count("<!-- bench:begin l4-rps-bulk -->"), 1)
            self.assertEqual(text.count("<!-- bench:begin l4-rps -->"), 1)
            self.assertIn("python3 bench/bench.py", text)

    def test_svg_is_well_formed(self):
        run = fake_run(proxies=("shardproxy", "nginx", "haproxy", "envoy"))
        ET.fromstring(report.svg(run, report.summarise(run)))

    def test_bootstrap_and_peer_configs_render(self):
        with tempfile.TemporaryDirectory() as d:
            path = peers.render_bootstrap(d, "envoy", 1001, 1002, 1003, 65536)
            text = open(path).read()
            self.assertIn("envoy.filters.network.tcp_proxy", text)
            self.assertEqual(text.count("per_connection_buffer_limit_bytes: 65536"), 2)
            self.assertNotIn("per_connection", open(peers.render_bootstrap(d, "x", 1, 2, 3, 0)).read())
            cfg = peers.render("haproxy.cfg", os.path.join(d, "h.cfg"), port=1, upstream_port=2,
                               buffer_directive="tune.bufsize 65536")
            self.assertIn("mode tcp", open(cfg).read())

    def test_http_run_metrics_section_and_chart(self):
        run = fake_run(scenarios=("http", "http16k", "httpclose"))
        s = report.summarise(run)
        med = s["nginx"]["median"]
        self.assertAlmostEqual(med["http_req_s"], 50000)
        self.assertAlmostEqual(med["http16k_cpu_us_req"], 20.0)
        self.assertAlmostEqual(med["httpclose_p99_ms"], 2.0)
        self.assertAlmostEqual(med["http_rss_mb"], 9.0)
        self.assertAlmostEqual(s["shardproxy"]["median"]["http_cpu_us_req"], 10.0)
        md = report.markdown_tables(run, s)
        self.assertIn("CPU µs/req 16 KiB ↓", md)
        self.assertIn("0.50× ▲", md)
        self.assertNotIn("KiB per idle conn", md)
        text = report.section(run, s, "results.svg")
        self.assertIn("<!-- bench:begin http-http-http16k-httpclose -->", text)
        self.assertIn("## HTTP/1.1 proxy", text)
        self.assertIn("-c50 with `Connection: close`", text)
        ET.fromstring(report.svg(run, s))

    def test_http_configs_render(self):
        with tempfile.TemporaryDirectory() as d:
            text = open(peers.render_bootstrap(d, "envoy", 1001, 1002, 1003, 65536, mode="http")).read()
            self.assertIn("envoy.filters.network.http_connection_manager", text)
            self.assertIn("envoy.filters.http.router", text)
            self.assertNotIn("per_connection", text)
            launch = peers.HAProxy("haproxy").launch(d, 1, 2, 3, 0, mode="http")
            cfg = open(launch.config).read()
            self.assertIn("mode http", cfg)
            self.assertIn("http-reuse always", cfg)
            launch = peers.Nginx("nginx").launch(d, 1, 2, 3, 0, mode="http")
            cfg = open(launch.config).read()
            self.assertIn("keepalive 64;", cfg)
            self.assertIn("proxy_pass http://bench_upstream;", cfg)
            self.assertNotIn("\nstream {", cfg)

    def test_args(self):
        a = bench.parse_args(["--peers", "nginx,envoy", "--scenarios", "bulk,rps"])
        self.assertEqual(a.peer_list, ["nginx", "envoy"])
        self.assertEqual(a.scenario_list, ["rps", "bulk"])
        self.assertEqual(bench.parse_args(["--scenarios", "idle,rps"]).scenario_list, ["rps", "idle"])
        self.assertEqual(bench.parse_args([]).idle_connections, 2000)
        self.assertEqual(bench.parse_args([]).scenario_list, ["rps", "newconn", "bulk", "idle"])
        a = bench.parse_args(["--scenarios", "httpclose,http"])
        self.assertEqual((a.scenario_list, a.http_connections), (["http", "httpclose"], 50))


if __name__ == "__main__":
    unittest.main()
