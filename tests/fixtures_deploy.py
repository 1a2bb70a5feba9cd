"""Fixtures and helpers of the integration tests that run a local deployment.

``require_redis`` skips (or, under CI, fails) without ``redis-server``;
``stop_deployment`` keeps a deployment's logs and stops every process it recorded.

````chaos_deployment`` (module scope) runs ``geoshard up`` on ``examples/local.yaml`` with
one API worker per region (an ``up`` costs ~25 s on 2 cores, so a module shares one),
seeds it, and always stops every process it started, even when a test fails. A module
changes the spec by setting ``CHAOS_SPEC_EXTRA`` (YAML appended to the example).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from geoshard.cluster import procs
from geoshard.cluster.launcher import Launcher
from geoshard.cluster.state import StateDir

CHAOS_USERS, CHAOS_ITEMS = 300, 1000


@dataclass
class ChaosDeployment:
    """A running deployment for chaos tests: its spec file and state dir."""

    spec: Path
    root: Path

    def chaos(
        self, scenario: str, out: Path, *extra: str, timeout_s: float = 120.0
    ) -> tuple[int, dict[str, object], str]:
        """Run ``geoshard chaos --json``: (exit code, the JSON document, stderr)."""
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "geoshard.cli",
                "chaos",
                str(self.spec),
                "--dir",
                str(self.root),
                "--scenario",
                scenario,
                "--out",
                str(out),
                "--json",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        try:
            doc = json.loads(res.stdout)
        except ValueError:
            doc = {}
        return res.returncode, doc, res.stderr


def run_cli(*args: str, timeout_s: float = 240.0) -> subprocess.CompletedProcess[str]:
    """``python -m geoshard.cli ARGS``, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "geoshard.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def up_and_seed(spec: Path, root: Path, *, api_workers: int, users: int, items: int) -> Any:
    """``geoshard up`` then ``geoshard seed --json``; the parsed seed document."""
    up = run_cli("up", str(spec), "--dir", str(root), "--api-workers", str(api_workers))
    assert up.returncode == 0, up.stderr[-4000:]
    seed = run_cli(
        "seed",
        str(spec),
        "--dir",
        str(root),
        "--users",
        str(users),
        "--items",
        str(items),
        "--json",
    )
    assert seed.returncode == 0, seed.stderr[-4000:]
    return json.loads(seed.stdout)


def require_redis() -> None:
    """Skip the test without redis-server and redis-cli on PATH (fail when CI is set)."""
    for b in ("redis-server", "redis-cli"):
        if shutil.which(b) is None:
            if os.environ.get("CI"):
                pytest.fail(f"CI is set and {b} is not on PATH")
            pytest.skip(f"{b} not found on PATH; apt-get install -y redis-server")


def stop_deployment(root: Path, factory: pytest.TempPathFactory) -> None:
    """Copy the deployment's logs where pytest keeps them, then stop every process it
    recorded (``geoshard down``, then each record again: nothing may outlive a test)."""
    sd = StateDir(root)
    if not sd.exists():
        return
    state = sd.read_state()
    logs = factory.mktemp("deploy-logs")
    for log in root.rglob("*.log"):
        shutil.copy(log, logs / "-".join(log.relative_to(root).parts))
    Launcher(root).down()
    for rec in state.processes():
        procs.stop(rec, timeout_s=1.0)


@pytest.fixture(scope="module")
def chaos_deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, repo_root: Path
) -> Iterator[ChaosDeployment]:
    """A seeded deployment of examples/local.yaml (plus the module's CHAOS_SPEC_EXTRA)."""
    require_redis()
    base = tmp_path_factory.mktemp("chaos")
    spec = base / "spec.yaml"
    extra = getattr(request.module, "CHAOS_SPEC_EXTRA", "")
    spec.write_text((repo_root / "examples" / "local.yaml").read_text() + "\n" + extra)
    root = base / "state"
    try:
        up_and_seed(spec, root, api_workers=1, users=CHAOS_USERS, items=CHAOS_ITEMS)
        yield ChaosDeployment(spec, root)
    finally:
        stop_deployment(root, tmp_path_factory)
