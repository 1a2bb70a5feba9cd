"""README command (a) is the main job: it must run as written and pass its own gates."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _command_a() -> list[str]:
    text = (REPO / "README.md").read_text()
    m = re.search(r"^# \(a\).*\n(.+)$", text, flags=re.MULTILINE)
    assert m, "README.md has no '# (a)' command line"
    line = m.group(1)
    assert line.startswith("./scripts/bootstrap && .venv/bin/geoshard "), line
    return shlex.split(line.split("&&", 1)[1].strip())[1:]  # the geoshard arguments


def test_readme_command_a_simulates_global_and_passes(tmp_path) -> None:
    args = _command_a()
    assert args[:2] == ["simulate", "examples/global.yaml"], args
    # the geoshard entry point of this interpreter's environment, from the repo root as
    # the README says, with the run directory moved into the test's temp dir
    proc = subprocess.run(
        [sys.executable, "-m", "geoshard.cli", *args, "--out", str(tmp_path / "run")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-3000:]}\n{proc.stderr[-2000:]}"
    lines = out.splitlines()
    assert lines[0].startswith("VERDICT: PASSED"), lines[0]  # the verdict comes first
    scale = args[args.index("--scale") + 1]
    assert lines[1].startswith(f"global seed 1, scale {scale},"), lines[1]
    assert f"  - scale {scale} (a faithful slice): every node of every pool" in out
    assert "residency audit:" in out and " 0 violation(s)" in out
    assert "warm start:" in out
    assert (tmp_path / "run" / "result.json").is_file()
    assert (tmp_path / "run" / "report.html").is_file()
