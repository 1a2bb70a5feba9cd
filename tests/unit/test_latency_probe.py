"""The overload benchmark's latency probe: its request mix, its pooling of refusals and
admitted answers, and a run against a real HTTP server on loopback."""

from __future__ import annotations

import http.server
import importlib.util
import json
import random
import shutil
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def lp(repo_root: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "latency_probe", repo_root / "benchmarks" / "latency_probe.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["latency_probe"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_requests_follow_the_mix_and_are_well_formed(lp: ModuleType) -> None:
    work = lp.Workload(
        {"feature_read": 0.5, "recommend": 0.3, "interaction_write": 0.2},
        jurisdiction="eu",
        users=50,
        items=10,
    )
    rng = random.Random(1)
    seen: Counter[str] = Counter()
    for _ in range(4000):
        op, method, path, body = work.request(rng)
        seen[op] += 1
        if op == "interaction_write":
            assert (method, path) == ("POST", "/v1/interactions")
            ev = json.loads(body)["interactions"][0]
            assert ev["user_id"].startswith("eu:") and 0 <= int(ev["user_id"][3:]) < 50
            assert ev["item_id"].startswith("sku-") and int(ev["item_id"][4:]) < 10
        else:
            assert method == "GET" and body is None
            assert "/eu:" in path
    assert abs(seen["feature_read"] / 4000 - 0.5) < 0.03
    assert abs(seen["recommend"] / 4000 - 0.3) < 0.03
    assert abs(seen["interaction_write"] / 4000 - 0.2) < 0.03


def test_an_unknown_type_in_the_mix_is_named(lp: ModuleType) -> None:
    with pytest.raises(ValueError, match="'feature_write'"):
        lp.Workload({"feature_write": 1.0}).request(random.Random(0))


def test_report_pools_refusals_and_keeps_404_as_an_answer(lp: ModuleType) -> None:
    raw = {
        "feature_read": {"200": [1.0, 2.0], "404": [3.0], "503": [10.0], "500": [99.0]},
        "recommend": {"429": [20.0], "ConnectionResetError": [50.0]},
    }
    out = lp.report(raw)
    assert out["refused"]["count"] == 2 and out["refused"]["max_ms"] == 20.0
    assert out["admitted"]["feature_read"]["count"] == 3  # 200s and the 404, not the 500
    assert out["admitted"]["feature_read"]["max_ms"] == 3.0
    assert "recommend" not in out["admitted"]  # no answer below 500 but refusals
    assert out["types"]["recommend"]["ConnectionResetError"]["count"] == 1
    assert lp.report({"recommend": {"200": [1.0]}})["refused"] is None


@pytest.fixture
def half_refusing_server() -> Iterator[int]:
    """A stdlib HTTP server on a free loopback port: every other request gets 503."""
    calls = Counter[str]()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as two writes

        def _answer(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            calls["n"] += 1
            status = 503 if calls["n"] % 2 else 200
            body = b"{}"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_probe_times_a_real_server(lp: ModuleType, half_refusing_server: int) -> None:
    work = lp.Workload({"feature_read": 0.5, "interaction_write": 0.5})
    raw = lp.probe(half_refusing_server, 0.5, 100.0, work, "tok", seed=3)
    out = lp.report(raw)
    total = sum(len(v) for per in raw.values() for v in per.values())
    # ~50 requests at 100/s in 0.5 s (one at a time, so never more)
    assert 30 <= total <= 51
    assert out["refused"]["count"] in (total // 2, (total + 1) // 2)
    assert sum(v["count"] for v in out["admitted"].values()) == total - out["refused"]["count"]
    assert all(v["max_ms"] < 1000 for v in out["admitted"].values())


@pytest.fixture(scope="module")
def bench(repo_root: Path, lp: ModuleType) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_overload", repo_root / "benchmarks" / "bench_overload.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_wrk_request_file_has_the_mix_and_zipf_users(
    bench: ModuleType, repo_root: Path, tmp_path: Path
) -> None:
    from geoshard.spec import load_spec

    spec = load_spec(repo_root / "examples" / "local.yaml")
    path = tmp_path / "requests.tsv"
    bench.write_requests(path, spec, "eu-west", 300, 1000, 6000)
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    assert len(rows) == 6000 and all(len(r) == 3 for r in rows)
    posts = [r for r in rows if r[0] == "POST"]
    assert all(r[1] == "/v1/interactions" and json.loads(r[2])["interactions"] for r in posts)
    assert all(r[2] == "" for r in rows if r[0] == "GET")
    share = len(posts) / len(rows)
    assert abs(share - spec.workload.mix["interaction_write"]) < 0.03
    users: Counter[str] = Counter()
    for r in rows:
        if r[0] == "GET":
            users[r[1].split("/")[3].split("?")[0]] += 1
    assert all(u.startswith("eu:") for u in users)
    # Zipf: the first id is the most drawn, far above a uniform draw's 1/300
    assert users.most_common(1)[0][0] == "eu:0"
    assert users["eu:0"] / sum(users.values()) > 5 / 300


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)"
)
def test_wrk_counts_answers_by_status_and_paces_its_connections(
    bench: ModuleType, repo_root: Path, tmp_path: Path, half_refusing_server: int
) -> None:
    import argparse

    from geoshard.spec import load_spec

    spec = load_spec(repo_root / "examples" / "local.yaml")
    path = tmp_path / "requests.tsv"
    bench.write_requests(path, spec, "eu-west", 300, 1000, 500)
    args = argparse.Namespace(duration=2)
    out = bench.run_wrk(args, half_refusing_server, "tok", path, 4, 40.0)
    # 4 connections paced to 40/s together, for 2 s: ~80 requests
    assert 40 <= out["requests"] <= 120, out
    assert out["ok"] + out["r503"] == out["requests"] and out["r5xx"] == out["r4xx"] == 0
    assert abs(out["ok"] - out["r503"]) <= 4  # the server refuses every other request
    assert out["mean_delay_ms"] == pytest.approx(1e3 * 4 / 40.0 - 2.0)
