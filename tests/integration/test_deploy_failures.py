"""`geoshard up` fails fast, says why, and leaves nothing running or behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "geoshard.cli", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=env,
    )


def _processes_of(root: Path) -> list[int]:
    """Pids whose command line or environment names ``root`` (what up would have started)."""
    needle = str(root).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            env = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(") ", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X") and (needle in cmd or needle in env):
            found.append(int(entry))
    return found


def test_a_missing_redis_server_is_named_with_the_fix(tmp_path: Path, repo_root: Path) -> None:
    env = dict(os.environ, PATH=str(Path(sys.executable).parent))  # python, no redis-server
    root = tmp_path / "state"
    res = _cli(["up", str(repo_root / "examples" / "local.yaml"), "--dir", str(root)], env)
    assert res.returncode == 3
    assert (
        "redis-server not found on PATH; install it: apt-get install -y redis-server" in res.stderr
    )
    assert not root.exists()


def test_a_region_not_healthy_in_time_stops_everything_started(
    tmp_path: Path, repo_root: Path
) -> None:
    spec = tmp_path / "slow.yaml"
    spec.write_text(
        (repo_root / "examples" / "local.yaml").read_text() + "\ndeploy:\n  startup_timeout_s: 2\n"
    )
    root = tmp_path / "state"
    res = _cli(["up", str(spec), "--dir", str(root)])
    assert res.returncode == 3, res.stderr[-2000:]
    assert re.search(
        r"region \S+\b.*(timed out|did not finish within|not healthy within)", res.stderr
    ), res.stderr[-2000:]
    assert "stopping what was started" in res.stderr
    assert _processes_of(root) == []
    assert not (root / "state.json").exists() and not (root / "regions").exists()


def test_down_without_a_deployment_is_a_no_op(tmp_path: Path) -> None:
    res = _cli(["down", "--dir", str(tmp_path / "none")])
    assert res.returncode == 0 and "nothing was running" in res.stdout
    res = _cli(["status", "--dir", str(tmp_path / "none")])
    assert res.returncode == 2 and "no deployment in" in res.stderr


def test_a_bad_spec_fails_before_anything_starts(tmp_path: Path, repo_root: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        (repo_root / "examples" / "local.yaml").read_text() + "\nstorage:\n  hot: {primaries: 2}\n"
    )
    res = _cli(["up", str(spec), "--dir", str(tmp_path / "state")])
    assert res.returncode == 2
    assert "storage.hot.primaries: a Redis Cluster needs at least 3 primaries" in res.stderr
    assert not (tmp_path / "state").exists()
