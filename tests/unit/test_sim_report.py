"""The run directory people look at: CSV tables, PNG plots and a self-contained report.html."""

from __future__ import annotations

import base64
import copy
import csv
import itertools
import json
import random
import re
from html import escape
from pathlib import Path
from typing import Any

import pytest

from geoshard.sim.metrics import LogHistogram
from geoshard.sim.report import PLOTS, UTILISATION_TOP_N, cdf_points, write_report
from geoshard.sim.run import simulate_spec, write_run
from geoshard.spec import load_spec

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPORT_FILES = (
    "result.json",
    "timeseries.csv",
    "requests.csv",
    "nodes.csv",
    "caches.csv",
    *PLOTS,
    "report.html",
)


@pytest.fixture(scope="module")
def run(
    repo_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    """One short simulation of examples/local.yaml, written with write_run."""
    result, ts = simulate_spec(
        load_spec(repo_root / "examples/local.yaml"), seed=1, duration_s=5, scale=1.0
    )
    d = write_run(tmp_path_factory.mktemp("run"), result, ts)
    return d, result, ts


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _html(d: Path) -> str:
    return (d / "report.html").read_text(encoding="utf-8")


def test_write_run_writes_every_report_file(run) -> None:
    d, _, _ = run
    for name in REPORT_FILES:
        assert (d / name).is_file(), name
        assert (d / name).stat().st_size > 0, name


@pytest.mark.parametrize("name", PLOTS)
def test_plots_are_valid_pngs_of_a_readable_size(run, name: str) -> None:
    import matplotlib.image

    d, _, _ = run
    data = (d / name).read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    img = matplotlib.image.imread(d / name)
    h, w = img.shape[:2]
    assert 700 <= w <= 2000 and 400 <= h <= 1500, (w, h)
    assert img.std() > 0.01  # not a blank canvas


def test_report_html_is_self_contained(run) -> None:
    html = _html(run[0])
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert "<script" not in html.lower()
    assert "@import" not in html and "url(" not in html
    assert "<link" not in html.lower()


def test_report_html_embeds_each_plot_byte_for_byte(run) -> None:
    d, _, _ = run
    html = _html(d)
    for name in PLOTS:
        m = re.search(rf'<img id="{re.escape(name)}"[^>]*src="data:image/png;base64,([^"]+)"', html)
        assert m, name
        assert base64.b64decode(m.group(1)) == (d / name).read_bytes()


def test_report_html_shows_residency_audit_and_slo_verdict(run) -> None:
    d, result, _ = run
    html = _html(d)
    res = result["metrics"]["residency"]
    v = res["violations"]
    section = html[html.index('id="residency"') : html.index('id="requests"')]
    assert f"{v:,} violation{'s' if v != 1 else ''}" in section
    assert f"{res['checks']:,} checks" in section
    verdict = "VERDICT: PASSED" if result["verdict"]["passed"] else "VERDICT: FAILED"
    assert verdict in html
    # the verdict comes before everything else the reader scrolls to
    assert html.index('id="slo-verdict"') < html.index('id="residency"') < html.index('id="plots"')
    assert html.index('id="plots"') < html.index('id="machine"')
    for f in result["verdict"]["failures"]:
        assert f"<li>{escape(f['message'])}</li>" in html


def test_requests_csv_matches_result(run) -> None:
    d, result, _ = run
    rows = _csv(d / "requests.csv")
    req = result["metrics"]["requests"]
    assert len(rows) == sum(len(per) for per in req.values())
    for row in rows:
        lat = req[row["type"]][row["region"]]
        assert int(row["count"]) == lat["count"] and int(row["failed"]) == lat["failed"]
        for k in ("p50_ms", "p95_ms", "p99_ms", "p999_ms", "mean_ms", "slo_attainment"):
            assert float(row[k]) == lat[k], (row["type"], row["region"], k)


def test_nodes_and_caches_csv_match_result(run) -> None:
    d, result, _ = run
    nodes = result["metrics"]["nodes"]
    rows = _csv(d / "nodes.csv")
    assert [r["node"] for r in rows] == list(nodes)
    for r in rows:
        n = nodes[r["node"]]
        assert int(r["capacity"]) == n["capacity"] and int(r["requests"]) == n["requests"]
        for k in ("utilisation", "offered_load", "peak_offered_load", "wait_p99_ms"):
            assert float(r[k]) == n[k], (r["node"], k)
        assert r["peak_phase"] == n["peak_phase"]
        assert n["utilisation"] <= 1.0
        assert int(r["max_queue"]) == n["max_queue"] and float(r["wait_ms"]) == n["wait_ms"]
        assert r["kind"] in ("api", "hot", "warm") and r["node"].startswith(r["region"] + "/")
    caches = result["metrics"]["caches"]
    crows = _csv(d / "caches.csv")
    assert [r["level"] for r in crows] == list(caches)
    for r in crows:
        c = caches[r["level"]]
        assert (int(r["hits"]), int(r["misses"]), float(r["hit_ratio"])) == (
            c["hits"],
            c["misses"],
            c["hit_ratio"],
        )


def test_result_carries_a_cdf_through_the_reported_quantiles(run) -> None:
    _, result, _ = run
    for per in result["metrics"]["requests"].values():
        for lat in per.values():
            pts = lat["cdf"]
            assert pts[-1][1] == 1.0
            xs = [x for x, _ in pts]
            for k in ("p50_ms", "p99_ms", "p999_ms"):
                assert any(abs(x - lat[k]) <= 1e-4 * lat[k] for x in xs), k


def _assert_monotone(pts: list[list[float]]) -> None:
    for (x0, f0), (x1, f1) in itertools.pairwise(pts):
        assert x0 <= x1 and f0 <= f1


def test_cdf_points_is_monotone_bounded_and_ends_at_one() -> None:
    rng = random.Random(3)
    h = LogHistogram()
    for _ in range(50_000):
        h.add(rng.lognormvariate(3.0, 1.2))
    h.add(0.0)
    pts = cdf_points(h)
    assert 100 <= len(pts) <= 200 < len(h.counts)
    _assert_monotone(pts)
    assert pts[0] == [0.0, pytest.approx(1 / 50_001, rel=1e-5)]
    assert pts[-1][1] == 1.0 and 0 < pts[-2][1] < 1.0
    assert pts == cdf_points(h)  # deterministic
    assert json.loads(json.dumps(pts)) == pts  # plain floats, rounded
    # the tail is resolved: points beyond p99.9
    assert sum(1 for _, f in pts if f > 0.999) >= 5
    small = cdf_points(h, max_points=10)
    assert len(small) <= 10 and small[-1][1] == 1.0
    _assert_monotone(small)


def test_cdf_points_small_and_empty_histograms() -> None:
    assert cdf_points(LogHistogram()) == []
    h = LogHistogram()
    for v in (5.0, 1.0, 5.0, 2.0):
        h.add(v)
    assert [f for _, f in cdf_points(h)] == [0.25, 0.5, 1.0]
    with pytest.raises(ValueError, match=r"max_points \(=1\) must be >= 8"):
        cdf_points(h, max_points=1)


def test_write_report_is_deterministic(run, tmp_path: Path) -> None:
    _, result, ts = run
    write_report(tmp_path / "a", result, ts)
    write_report(tmp_path / "b", result, ts)
    for name in ("requests.csv", "nodes.csv", "caches.csv", "report.html", *PLOTS):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_failed_verdict_renders_the_failures_and_the_same_cells_red(run, tmp_path: Path) -> None:
    _, result, ts = run
    r = copy.deepcopy(result)
    row = r["metrics"]["requests"]["recommend"]["eu-west"]
    row["p99_ms"] = 180.0
    pool = next(iter(r["metrics"]["nodes"]))
    r["metrics"]["nodes"][pool]["peak_offered_load"] = 0.97
    r["verdict"] = {
        "passed": False,
        "failures": [
            {
                "kind": "latency",
                "name": "recommend/eu-west",
                "region": "eu-west",
                "value": 180.0,
                "limit": 100.0,
                "message": "recommend in eu-west: p99 180 ms > 100 ms",
            },
            {
                "kind": "capacity",
                "name": pool,
                "region": pool.split("/")[0],
                "value": 0.97,
                "limit": 0.85,
                "message": f"{pool} runs at 97.0% offered load",
            },
            {
                "kind": "residency",
                "name": "residency",
                "region": "",
                "value": 2,
                "limit": 0,
                "message": "residency: 2 violation(s)",
            },
        ],
    }
    r["metrics"]["residency"] = {
        "checks": 1234,
        "violations": 2,
        "examples": ["t=1.250s read eu user_features in us-east"],
    }
    write_report(tmp_path, r, ts)
    html = _html(tmp_path)
    banner = html[html.index('id="slo-verdict"') : html.index('id="residency"')]
    assert "VERDICT: FAILED" in banner and "(3 failures)" in banner
    assert "<li>recommend in eu-west: p99 180 ms &gt; 100 ms</li>" in banner
    assert "<li>residency: 2 violation(s)</li>" in banner
    # banner and cells agree: the failing row's p99 cell is red, a passing row's is not
    requests = html[html.index('id="requests"') : html.index('id="counts"')]
    assert '<td class="bad">180</td>' in requests
    assert requests.count('class="bad"') == 1
    nodes = html[html.index('id="nodes"') : html.index('id="assumptions"')]
    assert '<td class="bad">97.0 %</td>' in nodes
    assert "2 violations</strong> in 1,234 checks" in html
    assert "t=1.250s read eu user_features in us-east" in html


def test_html_special_characters_are_escaped(run, tmp_path: Path) -> None:
    _, result, ts = run
    r = copy.deepcopy(result)
    evil = '<script>alert("x")</script> & <b>co</b>'
    r["spec_name"] = evil
    r["assumptions"] = [*r["assumptions"], "a < b & c > d"]
    r["verdict"] = {
        "passed": False,
        "failures": [
            {
                "kind": "latency",
                "name": "x",
                "region": "",
                "value": 1,
                "limit": 0,
                "message": '<img src="http://x">',
            }
        ],
    }
    write_report(tmp_path, r, ts)
    html = _html(tmp_path)
    assert evil not in html and "<script" not in html and '<img src="http' not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;co&lt;/b&gt;" in html
    assert "a &lt; b &amp; c &gt; d" in html


def test_results_without_cdf_and_with_hundreds_of_nodes_still_render(run, tmp_path: Path) -> None:
    _, result, ts = run
    r = copy.deepcopy(result)
    for per in r["metrics"]["requests"].values():
        for lat in per.values():
            lat.pop("cdf", None)
    node = next(iter(r["metrics"]["nodes"].values()))
    r["metrics"]["nodes"] = {
        f"r{i % 6}/hot-{i}": {**node, "utilisation": round(i / 400, 4)} for i in range(300)
    }
    r["faults"] = [
        {
            "kind": "latency_spike",
            "at_s": 1.0,
            "duration_s": 2.0,
            "end_s": 3.0,
            "target": "eu-west",
            "router_sees_at_s": None,
            "router_sees_end_at_s": None,
            "extra_ms": 50.0,
        },
        {
            "kind": "region_outage",
            "at_s": 2.0,
            "duration_s": 2.0,
            "end_s": 4.0,
            "target": "us-east",
            "router_sees_at_s": 4.0,
            "router_sees_end_at_s": 6.0,
        },
    ]
    write_report(tmp_path, r, ts)
    for name in PLOTS:
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)
    assert len(_csv(tmp_path / "nodes.csv")) == 300 > UTILISATION_TOP_N
    html = _html(tmp_path)
    assert "the 15 busiest of 300" in html
    assert "latency_spike" in html and "us-east" in html
