"""Offline checks of the soak harness (bench/soak.py): the EDS rotation, HTTP/1.1 response
reading, the RSS verdict and the pass rule; no proxy runs."""
import io
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import soak  # noqa: E402


class Rotation(unittest.TestCase):
    def test_every_step_lists_live_endpoints_and_the_set_changes(self):
        ports = [1001, 1002, 1003, 1004]
        seen = set()
        for step in range(40):
            cla = soak.assignment("web", ports, step)
            eps = cla["endpoints"][0]["lb_endpoints"]
            listed = [e["endpoint"]["address"]["socket_address"]["port_value"] for e in eps]
            self.assertTrue(1 <= len(listed) <= len(ports))
            self.assertEqual(len(set(listed)), len(listed))
            self.assertTrue(set(listed) <= set(ports))
            self.assertTrue(all(1 <= e["load_balancing_weight"] <= 5 for e in eps))
            seen.add((tuple(listed), tuple(e["load_balancing_weight"] for e in eps)))
        # Both which endpoints are listed and their weights vary over the run.
        self.assertGreater(len({s[0] for s in seen}), 10)
        self.assertGreater(len(seen), 20)

    def test_a_generation_changes_the_listeners_and_the_route(self):
        cfg = soak.Config([1], [2], {"soak-shardproxy": (10, 11)})
        before = cfg.generation()
        cfg.gen += 1
        after = cfg.generation()
        self.assertNotEqual(before["nodes"], after["nodes"])
        self.assertNotEqual(before["resources"], after["resources"])
        names = [x["name"] for x in after["nodes"]["soak-shardproxy"][soak.LISTENER]]
        self.assertEqual(names, ["http", "tcp"])


class Responses(unittest.TestCase):
    def test_reads_status_body_and_close(self):
        f = io.BytesIO(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\n"
                       b"hello world\nHTTP/1.1 ...")
        self.assertEqual(soak.read_response(f), (200, b"hello world\n", True))

    def test_keep_alive_answer(self):
        f = io.BytesIO(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 3\r\n\r\nabc")
        self.assertEqual(soak.read_response(f), (503, b"abc", False))

    def test_nothing_before_the_close_is_no_response(self):
        with self.assertRaises(soak.NoResponse):
            soak.read_response(io.BytesIO(b""))


def run(failed=0, retried=0, flat=True, exit=None):
    kinds = {k: {"requests": 10, "retried": retried, "failed": failed} for k in soak.KINDS}
    return {**kinds, "retry_bound": {"h1": 8, "h2c": 8, "tcp": 0}, "exit": exit,
            "rss": {"flat": flat}, "fds": {"flat": True}}


class Verdict(unittest.TestCase):
    def test_flat_within_slack_and_growth_beyond(self):
        mb = 1 << 20
        flat = [(t, 40 * mb) for t in range(0, 1800, 10)]
        self.assertTrue(soak.flatness(flat, 1800, 60, 600, soak.RSS_SLACK_BYTES)["flat"])
        growing = [(t, 40 * mb + t * 20_000) for t in range(0, 1800, 10)]
        v = soak.flatness(growing, 1800, 60, 600, soak.RSS_SLACK_BYTES)
        self.assertFalse(v["flat"])
        self.assertEqual(v["window_s"], 580)  # at most a third of the run after warm-up
        # A short run uses thirds of the run after warm-up.
        self.assertEqual(soak.flatness(flat[:6], 60, 15, 600, soak.RSS_SLACK_BYTES)["window_s"], 15)

    def test_pass_needs_no_failure_bounded_retries_flat_rss_and_the_resync(self):
        ok = {"restart": {"resync_s": 1.0}, "nacks": 0}
        self.assertTrue(soak.verdict({**ok, "proxies": {"a": run(retried=0)}}))
        self.assertTrue(soak.verdict({**ok, "proxies": {"a": run(retried=0), "b": run()}}))
        leaking = run()
        leaking["fds"] = {"flat": False}
        for bad in (run(failed=1), run(flat=False), run(exit=1), leaking):
            self.assertFalse(soak.verdict({**ok, "proxies": {"a": bad}}))
        too_many = run()
        too_many["h1"]["retried"] = 9
        self.assertFalse(soak.verdict({**ok, "proxies": {"a": too_many}}))
        self.assertFalse(soak.verdict({"restart": {"error": "x"}, "nacks": 0, "proxies": {"a": run()}}))
        self.assertFalse(soak.verdict({**ok, "nacks": 1, "proxies": {"a": run()}}))
        self.assertFalse(soak.verdict({**ok, "proxies": {}}))


if __name__ == "__main__":
    unittest.main()
