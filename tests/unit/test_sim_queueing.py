"""Queueing validation through the CLI: the full path collapsed to one M/M/c queue.

``examples/validation/mm{1,8}.yaml`` have one region, no caches, zero RTTs, 100 %
feature_read, an API pool with exponential 1 ms service and a 0 ms hot tier, so the
simulated response time is the M/M/c sojourn time. Oracles (sim-anchors §3.1):

* M/M/1, rho 0.8: Wq = 4 ms, P99 of the response time = ln(100)/(mu - lambda) = 23.026 ms.
* M/M/8, lambda 6.4, mu 1 (per ms): P(wait) 0.4576, Wq 0.2860 ms, P99 response 5.1522 ms.

Tolerances: mean wait within 3 %, P99 within 5 % (runs of 500k+ requests).
"""

from __future__ import annotations

import json
import math

from typer.testing import CliRunner

from geoshard.cli import app

runner = CliRunner()


def _sim(repo_root, tmp_path, name: str, duration: str) -> dict:
    res = runner.invoke(
        app,
        [
            "simulate",
            str(repo_root / f"examples/validation/{name}.yaml"),
            "--duration",
            duration,
            "--seed",
            "1",
            "--out",
            str(tmp_path),
            "--json",
        ],
    )
    assert res.exit_code in (0, 1), res.output
    return json.loads(res.stdout)["metrics"]


def test_mm1_at_rho_08(repo_root, tmp_path) -> None:
    m = _sim(repo_root, tmp_path, "mm1", "750")  # 600k requests
    wq = m["nodes"]["r1/api"]["wait_ms"]
    p99 = m["requests"]["feature_read"]["all"]["p99_ms"]
    assert abs(wq / 4.0 - 1) <= 0.03, wq
    assert abs(p99 / (math.log(100) / 0.2) - 1) <= 0.05, p99


def test_mm8_erlang_c(repo_root, tmp_path) -> None:
    m = _sim(repo_root, tmp_path, "mm8", "100")  # 640k requests
    wq = m["nodes"]["r1/api"]["wait_ms"]
    p99 = m["requests"]["feature_read"]["all"]["p99_ms"]
    assert abs(wq / 0.286028 - 1) <= 0.03, wq
    assert abs(p99 / 5.1522 - 1) <= 0.05, p99
