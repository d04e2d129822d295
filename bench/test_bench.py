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


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


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
            if "https" in scenarios:
                sc["https"] = {"requests": 200000, "bytes": 1, "duration_s": 10.0, "errors": 0,
                               "p50_us": 400, "p90_us": 700, "p99_us": 1000, "max_us": 5000,
                               "cpu_s": 3.0 * (i + 1), "rss_warm": (10 + i) << 20,
                               "proxy_core_busy": 0.4, "client_core_busy": 1.0}
            for name, cpu in (("tlsnew", 2.0), ("tlsresume", 1.0)):
                if name in scenarios:
                    # 20,000 handshakes: shardproxy 100 / 50 µs each, the peer twice that.
                    sc[name] = {"requests": 20000, "resumed": 19990 if name == "tlsresume" else 0,
                                "bytes": 0, "duration_s": 10.0, "errors": 0, "p50_us": 4000,
                                "p90_us": 6000, "p99_us": 9000, "max_us": 20000, "cpu_s": cpu * (i + 1),
                                "rss_warm": 12 << 20, "proxy_core_busy": 0.3, "client_core_busy": 1.0,
                                "tls": "TLSv1_3 TLS13_AES_128_GCM_SHA256 X25519"}
            for name in ("tlspass", "tlsterm"):
                if name in scenarios:
                    sc[name] = {"requests": 50, "bytes": 5 * 10 ** 9, "duration_s": 10.0, "errors": 0,
                                "cpu_s": 2.5 * (i + 1), "rss_warm": 12 << 20, "proxy_core_busy": 0.3,
                                "client_core_busy": 1.0, "tls": "TLSv1.3 TLS_AES_128_GCM_SHA256"}
            if "tlsidle" in scenarios:
                sc["tlsidle"] = {"requests": 2000, "bytes": 1, "duration_s": 2.0, "errors": 0,
                                 "connections": 2000, "held": 2000, "alive": 2000,
                                 "rss_before": 10 << 20, "rss_open": (10 << 20) + 2000 * 4096 * (i + 1)}
            if "h2c" in scenarios:
                sc["h2c"] = {"requests": 300000, "bytes": 12 * 300000, "duration_s": 10.0, "errors": 0,
                             "p50_us": 9000, "p90_us": 20000, "p99_us": 40000 * (i + 1), "max_us": 90000,
                             "cpu_s": 3.0 * (i + 1), "rss_warm": (20 + i) << 20,
                             "proxy_core_busy": 0.5, "client_core_busy": 1.0}
            if "grpc" in scenarios:
                # 5,000 calls/s for 10 s: shardproxy 40 µs per call, the peer 80.
                sc["grpc"] = {"requests": 50000, "bytes": 105 * 50000, "duration_s": 10.0, "errors": 0,
                              "p50_us": 1000, "p90_us": 2000, "p99_us": 5000, "max_us": 20000,
                              "cpu_s": 2.0 * (i + 1), "rss_warm": 30 << 20, "target_rate": 5000,
                              "proxy_core_busy": 0.3, "client_core_busy": 0.6}
            if "h2idle" in scenarios:
                sc["h2idle"] = {"requests": 1000, "bytes": 1, "duration_s": 1.0, "errors": 0,
                                "connections": 1000, "held": 1000, "alive": 1000,
                                "rss_before": 10 << 20, "rss_open": (10 << 20) + 1000 * 10240 * (i + 1)}
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
    def test_the_epoll_peer_runs_shardproxy_on_epoll(self):
        args = bench.parse_args(["--peers", "shardproxy,shardproxy-epoll", "--proxy-bin", "/bin/true"])
        epoll = peers.make_peer("shardproxy-epoll", args)
        command = epoll.command("cfg.yaml")
        self.assertEqual(command[:3], ["/bin/true", "-c", "cfg.yaml"])
        self.assertEqual(command[-2:], ["--io-backend", "epoll"])
        self.assertNotIn("--io-backend", peers.make_peer("shardproxy", args).command("cfg.yaml"))

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

    def test_tls_run_metrics_section_and_chart(self):
        run = fake_run(scenarios=("https", "tlsnew", "tlsresume", "tlsidle", "tlspass", "tlsterm"))
        run["runs"][2]["scenarios"]["tlsnew"]["cpu_s"] = 2.4  # a slower round: a spread to show
        s = report.summarise(run)
        sp, ng = s["shardproxy"]["median"], s["nginx"]["median"]
        self.assertAlmostEqual(sp["https_cpu_us_req"], 15.0)
        self.assertAlmostEqual(sp["tlsnew_cpu_us_hs"], 100.0)
        self.assertAlmostEqual(sp["tlsnew_hs_core"], 10000.0)
        self.assertAlmostEqual(ng["tlsresume_cpu_us_hs"], 100.0)
        self.assertAlmostEqual(sp["resume_gain"], 2.0)
        self.assertAlmostEqual(sp["tlsresume_pct"], 99.95)
        self.assertAlmostEqual(sp["tlsidle_kib_conn"], 4.0)
        self.assertAlmostEqual(ng["tlspass_gb_s"], 0.5)
        self.assertAlmostEqual(ng["tlsterm_cpu_s_gb"], 1.0)
        md = report.markdown_tables(run, s)
        self.assertIn("CPU µs/full handshake ↓", md)
        self.assertIn("0.50× ▲", md)
        text = report.section(run, s, "results.svg")
        self.assertIn("<!-- bench:begin tls-https-tlsnew-tlsresume-tlsidle-tlspass-tlsterm -->", text)
        self.assertIn("## TLS 1.3", text)
        self.assertIn("TLSv1_3 TLS13_AES_128_GCM_SHA256 X25519 (tlsnew/tlsresume)", text)
        self.assertIn("100.0 – 120.0 (±10 %)", text)  # shardproxy tlsnew µs over rounds
        ET.fromstring(report.svg(run, s))

    def test_tls_configs_render(self):
        tls = peers.TlsFiles(cert="/c.crt", key="/c.key", pem="/c.pem", sni="bulk.example.com",
                             upstream_tls_port=4443)
        with tempfile.TemporaryDirectory() as d:
            text = _read(peers.render_bootstrap(d, "x", 1001, 1002, 1003, 0, mode="https", tls=tls))
            self.assertIn("DownstreamTlsContext", text)
            self.assertIn('filename: "/c.key"', text)
            self.assertIn("tls_minimum_protocol_version: TLSv1_3", text)
            text = _read(peers.render_bootstrap(d, "x", 1001, 1002, 1003, 65536, mode="tlspass", tls=tls))
            self.assertIn("envoy.filters.listener.tls_inspector", text)
            self.assertIn('server_names: ["bulk.example.com"]', text)
            self.assertIn("port_value: 4443", text)
            self.assertNotIn("DownstreamTlsContext", text)
            self.assertEqual(text.count("per_connection_buffer_limit_bytes: 65536"), 3)
            launch = peers.Envoy("envoy").launch(d, 1, 2, 3, 65536, mode="tlsterm", tls=tls)
            text = _read(launch.config)
            self.assertIn("DownstreamTlsContext", text)
            self.assertIn("envoy.filters.network.tcp_proxy", text)
            self.assertIn("max_connections: 1000000", text)
            cfg = _read(peers.Nginx("nginx").launch(d, 1, 2, 3, 0, mode="https", tls=tls).config)
            self.assertIn("listen 127.0.0.1:1 ssl", cfg)
            self.assertIn("ssl_protocols TLSv1.3;", cfg)
            cfg = _read(peers.HAProxy("haproxy").launch(d, 1, 2, 3, 0, mode="https", tls=tls).config)
            self.assertIn("ssl crt /c.pem ssl-min-ver TLSv1.3", cfg)
            cfg = _read(peers.HAProxy("haproxy").launch(d, 1, 2, 3, 0, mode="tlspass", tls=tls).config)
            self.assertIn("req.ssl_sni -i bulk.example.com", cfg)
            for mode, want in (("tlspass", "map $ssl_preread_server_name $bench_backend"),
                               ("tlsterm", "listen 127.0.0.1:1 ssl")):
                text = peers.render(f"nginx-{mode}.conf", os.path.join(d, "n.conf"), dir=d, port=1,
                                    upstream_port=2, load_module="", buffer_directive="", **tls.values())
                self.assertIn(want, _read(text))

    def test_h2_run_metrics_section_and_chart(self):
        run = fake_run(scenarios=("h2c", "grpc", "h2idle"))
        run.update(h2_connections=50, h2_streams=10, grpc_rate=5000, grpc_connections=10)
        s = report.summarise(run)
        sp, ng = s["shardproxy"]["median"], s["nginx"]["median"]
        self.assertAlmostEqual(sp["h2c_cpu_us_req"], 10.0)
        self.assertAlmostEqual(ng["h2c_p99_ms"], 80.0)
        self.assertAlmostEqual(sp["grpc_cpu_us_req"], 40.0)
        self.assertAlmostEqual(ng["grpc_req_s"], 5000.0)
        self.assertAlmostEqual(ng["grpc_p99_ms"], 5.0)
        self.assertAlmostEqual(sp["h2idle_kib_conn"], 10.0)
        self.assertAlmostEqual(ng["h2idle_kib_conn"], 20.0)
        md = report.markdown_tables(run, s)
        self.assertIn("CPU µs/gRPC call ↓", md)
        self.assertIn("KiB per idle h2 conn ↓", md)
        self.assertIn("0.50× ▲", md)
        text = report.section(run, s, "results.svg")
        self.assertIn("<!-- bench:begin h2-h2c-grpc-h2idle -->", text)
        self.assertIn("## HTTP/2 and gRPC", text)
        self.assertIn("h2load -c50 -m10", text)
        self.assertIn("fixed 5,000 calls/s over 10 h2c connections", text)
        ET.fromstring(report.svg(run, s))

    def test_h2_configs_render(self):
        with tempfile.TemporaryDirectory() as d:
            text = _read(peers.render_bootstrap(d, "envoy", 1001, 1002, 1003, 0, mode="h2c"))
            self.assertIn("codec_type: AUTO", text)
            self.assertNotIn("http2_protocol_options", text)
            text = _read(peers.Envoy("envoy").launch(d, 1, 2, 3, 0, mode="grpc").config)
            self.assertIn("codec_type: AUTO", text)
            self.assertIn("http2_protocol_options: {}", text)
            self.assertIn("port_value: 2", text)
            cfg = _read(peers.Nginx("nginx").launch(d, 1, 2, 3, 0, mode="h2c").config)
            self.assertIn("listen 127.0.0.1:1 http2", cfg)
            self.assertIn("proxy_pass http://bench_upstream;", cfg)
            cfg = _read(peers.Nginx("nginx").launch(d, 1, 2, 3, 0, mode="grpc").config)
            self.assertIn("grpc_pass grpc://grpc_upstream;", cfg)
            cfg = _read(peers.HAProxy("haproxy").launch(d, 1, 2, 3, 0, mode="h2c").config)
            self.assertIn("bind 127.0.0.1:1 proto h2", cfg)
            self.assertNotIn("server upstream 127.0.0.1:2 proto h2", cfg)
            cfg = _read(peers.HAProxy("haproxy").launch(d, 1, 2, 3, 0, mode="grpc").config)
            self.assertIn("server upstream 127.0.0.1:2 proto h2", cfg)
            up = _read(peers.render("upstream-nginx.conf", os.path.join(d, "u.conf"), dir=d, upstream_port=1,
                                    tls_listen="", grpc_port=7))
            self.assertIn("listen 127.0.0.1:7 http2", up)
            self.assertIn("add_trailer grpc-status 0;", up)

    def test_h2load_summary_and_grpc_frame(self):
        import scenarios
        out = ("finished in 10.00s, 4990.30 req/s, 1.21MB/s\n"
               "requests: 49903 total, 49913 started, 49903 done, 49900 succeeded, 3 failed, 0 errored, "
               "0 timeout\nstatus codes: 49900 2xx, 0 3xx, 0 4xx, 3 5xx\n"
               "traffic: 12.13MB (12718765) total, 1.20MB (1261000) headers (space savings 90.00%), "
               "5.00MB (5239500) data\n")
        r = scenarios.parse_h2load(out)
        self.assertEqual((r["succeeded"], r["failed"], r["data_bytes"]), (49900, 3, 5239500))
        self.assertEqual(r["status"]["5xx"], 3)
        self.assertAlmostEqual(r["duration_s"], 10.0)
        self.assertAlmostEqual(scenarios.parse_h2load(out.replace("10.00s", "999.50ms"))["duration_s"], 0.9995)
        frame = scenarios.grpc_frame(100, 0x61)
        self.assertEqual(frame[:5], b"\x00\x00\x00\x00\x64")
        self.assertEqual(len(frame), 105)

    def test_args(self):
        a = bench.parse_args(["--peers", "nginx,envoy", "--scenarios", "bulk,rps"])
        self.assertEqual(a.peer_list, ["nginx", "envoy"])
        self.assertEqual(a.scenario_list, ["rps", "bulk"])
        self.assertEqual(bench.parse_args(["--scenarios", "idle,rps"]).scenario_list, ["rps", "idle"])
        self.assertEqual(bench.parse_args([]).idle_connections, 2000)
        self.assertEqual(bench.parse_args([]).scenario_list, ["rps", "newconn", "bulk", "idle"])
        a = bench.parse_args(["--scenarios", "tlsterm,https,tlsnew"])
        self.assertEqual(a.scenario_list, ["https", "tlsnew", "tlsterm"])
        a = bench.parse_args(["--scenarios", "httpclose,http"])
        self.assertEqual((a.scenario_list, a.http_connections), (["http", "httpclose"], 50))
        a = bench.parse_args(["--scenarios", "h2idle,grpc,h2c"])
        self.assertEqual((a.scenario_list, a.grpc_rate, a.h2_streams), (["h2c", "grpc", "h2idle"], 5000, 10))


class SidecarTests(unittest.TestCase):
    """bench/sidecar.py's pure helpers: the Istio-resource strips, ACK verdicts, summaries."""

    def script(self):
        import sidecar
        ts = "type.googleapis.com/udpa.type.v1.TypedStruct"
        hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "hcm", "http_filters": [
                {"name": "istio.metadata_exchange", "typed_config": {
                    "@type": ts, "type_url": "type.googleapis.com/io.istio.http.peer_metadata.Config"}},
                {"name": "user-wasm", "config_discovery": {"type_urls": [sidecar.WASM]}},
                {"name": "istio.stats", "typed_config": {"@type": "type.googleapis.com/stats.PluginConfig"}},
                {"name": "envoy.filters.http.router", "typed_config": {"@type": "router"}}]}}
        return {"resources": {
            sidecar.LISTENER: [
                {"name": "virtualOutbound", "address": {"socket_address": {"port_value": 15001}},
                 "filter_chains": [{"filters": [hcm]}]},
                {"name": "10.0.0.1_80", "address": {"socket_address": {"port_value": 80}},
                 "bind_to_port": False, "filter_chains": [{"filters": [{"name": "tcp", "typed_config": {}}]}]}],
            sidecar.ECDS: [{"name": "user-wasm", "typed_config": {"@type": sidecar.WASM}}],
        }}

    def test_strips(self):
        import sidecar
        s = self.script()
        self.assertEqual(sidecar.without_user_wasm(s), (1, 1))
        self.assertNotIn(sidecar.ECDS, s["resources"])
        envoy = self.script()
        sidecar.without_user_wasm(envoy)
        self.assertEqual(sidecar.without_istio_extensions(envoy), 2)
        filters = envoy["resources"][sidecar.LISTENER][0]["filter_chains"][0]["filters"][0]
        self.assertEqual([f["name"] for f in filters["typed_config"]["http_filters"]],
                         ["envoy.filters.http.router"])
        self.assertEqual(sidecar.bound_ports(envoy), [15001])
        self.assertEqual(sidecar.counts(envoy), {"Listener": 2})

    def test_verdicts(self):
        import sidecar
        route = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
        served = {sidecar.CLUSTER: [], sidecar.LISTENER: [], route: []}
        acks = {"versions": {sidecar.CLUSTER: "2", sidecar.LISTENER: "1", route: "1"},
                "clients": {"n": {sidecar.CLUSTER: {"acked": ["1", "2"]},
                                  sidecar.LISTENER: {"acked": [], "nacked": [{"version": "1"}]}}}}
        v = sidecar.verdicts(acks, "n", served)
        self.assertEqual(v, {sidecar.CLUSTER: "ack", sidecar.LISTENER: "nack", route: None})
        self.assertTrue(sidecar.all_answered(v))
        acks["clients"]["n"][route] = {"acked": []}
        self.assertFalse(sidecar.all_answered(sidecar.verdicts(acks, "n", served)))
        self.assertFalse(sidecar.all_answered(sidecar.verdicts(acks, "other", served)))

    def test_chain_summary_and_report(self):
        import scenarios
        import sidecar
        turns = []
        for rnd in (1, 2, 3):
            turns.append({"path": "direct", "round": rnd, "p99_us": 1000 + rnd, "rps": 2000, "p50_us": 300})
            turns.append({"path": "shardproxy", "round": rnd, "p99_us": 1200 + rnd, "rps": 2000, "p50_us": 400,
                          "cpu_us_per_req": 30.0, "rss": 20e6})
            turns.append({"path": "envoy", "round": rnd, "p99_us": 2000 + rnd, "rps": 2000, "p50_us": 600,
                          "cpu_us_per_req": 120.0, "rss": 140e6})
        s = sidecar.chain_summary(turns)
        self.assertEqual((s["shardproxy"]["added_p99_us"], s["envoy"]["added_p99_us"]), (200, 1000))
        self.assertAlmostEqual(s["added_p99_ratio"], 0.2)
        self.assertAlmostEqual(s["cpu_ratio"], 0.25)
        self.assertEqual(scenarios.percentile([1, 2, 3, 4], 0.99), 4)
        self.assertEqual(scenarios.percentile([], 0.5), 0)
        for t in turns:
            t.update(loadavg="1.0 1.0 1.0", errors=0)
        res = {"args": vars(sidecar.parse_args([])), "chain": turns, "chain_summary": s, "start": "s", "end": "e",
               "machine": {"hostname": "h", "cpu": "c", "cores": 2, "mem_gib": 1, "kernel": "k",
                           "loadavg": ["1", "1", "1"]}, "loadavg_end": "1 1 1", "command": "c", "versions": "v"}
        text = sidecar.render_chain(res)
        self.assertIn("| added p99 ≤ 0.5× | 0.20× | yes |", text)
        self.assertIn("| CPU per request of the pair ≤ 0.4× | 0.25× | yes |", text)
        self.assertTrue(text.startswith("<!-- bench:begin sidecar-chain -->"))
        self.assertIn("Added p50, shardproxy ÷ Envoy: 0.33×", text)

    def test_body_check(self):
        import sidecar
        self.assertEqual(sidecar.body_mismatch({"succeeded": 10, "bytes": 10 * 1024}, 20), "")
        self.assertEqual(sidecar.body_mismatch({"succeeded": 10, "bytes": 12 * 1024}, 20), "")  # in flight
        self.assertIn("body bytes", sidecar.body_mismatch({"succeeded": 10, "bytes": 10 * 1000}, 20))



class GuardTest(unittest.TestCase):
    """bench/guard.py's verdict, with the measurements replaced by fixed per-round values."""

    def verdict(self, *ratios):
        import contextlib
        import io
        import guard
        calls = []

        def fake_measure(args):
            calls.append(args)
            return [(10.0 * ratios[len(calls) - 1], 10.0)] * args.rounds
        saved, guard.measure = guard.measure, fake_measure
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                rc = guard.main([])
        finally:
            guard.measure = saved
        return rc, len(calls)

    def test_bench_argv(self):
        import guard
        a = bench.parse_args(guard.bench_argv(guard.parse_args(["--proxy-bin", "/x/shardproxy"])))
        self.assertEqual((a.scenario_list, a.peer_list), (["http"], ["shardproxy", "nginx"]))
        self.assertEqual((a.rounds, a.duration, a.warmup, a.no_write, a.proxy_bin), (5, 4.0, 1.0, True, "/x/shardproxy"))

    def test_verdicts(self):
        self.assertEqual(self.verdict(1.2), (0, 1))
        self.assertEqual(self.verdict(1.3), (0, 1))
        self.assertEqual(self.verdict(1.5), (1, 1))  # well above: no second chance
        # Borderline: measured again, judged on both measurements' rounds together.
        self.assertEqual(self.verdict(1.32, 1.2), (0, 2))
        self.assertEqual(self.verdict(1.32, 1.33), (1, 2))

    def test_median_of_round_ratios(self):
        import guard
        pairs = [(13.0, 10.0), (26.0, 10.0), (12.0, 10.0), (11.0, 10.0), (30.0, 12.0)]
        self.assertAlmostEqual(guard.verdict_ratio(pairs), 1.3)


class RuntimeCompareTest(unittest.TestCase):
    """bench/runtime_compare.py's summary: ratios paired by round, medians, the table."""

    @staticmethod
    def fake_runs():
        import runtime_compare
        runs = []
        # rt: 10 µs/req every round; compio: 9, 12, 8 µs/req; 100k requests in 10 s each.
        for rnd, compio_cpu in ((1, 0.9), (2, 1.2), (3, 0.8)):
            for variant, cpu in (("rt", 1.0), ("compio", compio_cpu)):
                r = {"requests": 100000, "duration_s": 10.0, "cpu_s": cpu, "errors": 0,
                     "proxy_core_busy": 0.5, "client_core_busy": 1.0,
                     "events_per_req": {e: 2.0 for e in runtime_compare.PERF_EVENTS}}
                runs.append({"variant": variant, "round": rnd, "scenarios": {"keepalive": r}})
        return runs

    def test_summary(self):
        import runtime_compare as rc
        s = rc.summarise(self.fake_runs(), ["rt", "compio"], ["keepalive"])["keepalive"]
        self.assertAlmostEqual(s["rt"]["cpu_us_req"], 10.0)
        self.assertAlmostEqual(s["compio"]["cpu_us_req"], 9.0)
        self.assertAlmostEqual(s["compio"]["cpu_us_req_ratio"], 0.9)
        self.assertEqual([round(x, 2) for x in s["compio"]["cpu_us_req_ratios"]], [0.9, 1.2, 0.8])
        self.assertAlmostEqual(s["compio"]["req_s_ratio"], 1.0)
        self.assertAlmostEqual(s["compio"]["events_per_req"]["raw_syscalls:sys_enter"], 2.0)

    def test_markdown_and_args(self):
        import contextlib
        import io

        import runtime_compare as rc
        runs = self.fake_runs()
        run = {"command": "python3 bench/runtime_compare.py", "started_at": "2026-12-07T00:00:00+00:00",
               "machine": {"cpu": "x", "cores": 2, "kernel": "Linux", "loadavg": ["1", "1", "1"]},
               "loadavg_end": ["1", "1", "1"], "compio": "0.19.2", "rounds": 3, "duration": 10.0,
               "connections": 100, "threads": 1, "server_cores": "0", "client_core": 1, "runs": runs}
        md = rc.markdown(run, rc.summarise(runs, ["rt", "compio"], ["keepalive"]))
        self.assertIn("| keepalive | compio | 10,000 | 9.00 | 1.000 | 0.900 | 0.90 1.20 0.80 |", md)
        self.assertIn("| keepalive | compio | 2.00 | 2.00 | 2.00 | 2.00 |", md)
        with contextlib.redirect_stderr(io.StringIO()), self.assertRaises(SystemExit):
            rc.parse_args(["--variants", "compio"])  # no baseline to compare with
        a = rc.parse_args(["--server-cores", "2-3", "--connections", "64"])
        self.assertEqual((a.proxy_core, a.http_connections), (2, 64))


if __name__ == "__main__":
    unittest.main()
