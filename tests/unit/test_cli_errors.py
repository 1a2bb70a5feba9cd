"""How commands end: one error decorator, JSON error objects, a closed stdout, Ctrl-C."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geoshard.cli import app

REPO = Path(__file__).resolve().parents[2]
LOCAL = str(REPO / "examples" / "local.yaml")
runner = CliRunner()


def test_every_command_goes_through_the_error_decorator() -> None:
    commands = {
        c.name or getattr(c.callback, "__name__", ""): c.callback for c in app.registered_commands
    }
    assert set(commands) >= {"validate", "schema", "route", "rebalance", "terraform", "simulate"}
    for name, callback in commands.items():
        assert getattr(callback, "handles_errors", False), (
            f"{name} is not wrapped by handles_errors"
        )


def test_config_error_with_json_prints_an_error_object_on_stdout(tmp_path: Path) -> None:
    res = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml"), "--json"])
    assert res.exit_code == 2
    doc = json.loads(res.stdout)
    assert doc["error"]["category"] == "config" and doc["error"]["exit_code"] == 2
    assert "no such spec file" in doc["error"]["message"]
    assert "error: " in res.stderr and "no such spec file" in res.stderr


def test_spec_error_object_lists_each_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(LOCAL).read_text().replace("hot: {nodes: 3,", "hot: {nodes: -2,", 1))
    res = runner.invoke(app, ["validate", str(bad), "--json"])
    assert res.exit_code == 2
    problems = json.loads(res.stdout)["error"]["problems"]
    assert any("regions.eu-west.hot.nodes: must be > 0 (got -2)" in p for p in problems), problems


def test_without_json_an_error_leaves_stdout_empty(tmp_path: Path) -> None:
    res = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and res.stdout == ""


def test_usage_error_with_json_prints_an_error_object() -> None:
    res = runner.invoke(app, ["route", LOCAL, "--json", "--user", "eu:1", "--bogus"])
    assert res.exit_code == 2
    doc = json.loads(res.stdout)
    assert doc["error"]["category"] == "usage" and "--bogus" in doc["error"]["message"]


def test_simulate_errors_give_the_json_object_too(tmp_path: Path) -> None:
    res = runner.invoke(app, ["simulate", LOCAL, "--scale", "2", "--json", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "--scale" in json.loads(res.stdout)["error"]["message"]


def test_interrupt_exits_130_with_a_word_on_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    import geoshard.spec

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(geoshard.spec, "load_spec", interrupted)
    res = runner.invoke(app, ["route", LOCAL, "--user", "eu:1", "--json"])
    assert res.exit_code == 130
    assert res.stderr.strip() == "interrupted"
    assert json.loads(res.stdout)["error"]["category"] == "interrupted"


@pytest.mark.parametrize(
    "args", [["schema"], ["validate", LOCAL, "--json"], ["route", LOCAL, "--user", "eu:42"]]
)
def test_closed_stdout_ends_quietly_with_the_commands_own_result(args: list[str]) -> None:
    # the reader closes the pipe before the command writes (the import alone takes longer)
    proc = subprocess.Popen(
        [sys.executable, "-m", "geoshard.cli", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()
    assert stderr.decode() == ""


def test_simulate_with_a_closed_stdout_keeps_its_verdict(tmp_path: Path) -> None:
    # global.yaml at this scale passes its SLOs: exit 0, where rich's own handling gave 1
    args = [
        sys.executable,
        "-m",
        "geoshard.cli",
        "simulate",
        str(REPO / "examples" / "global.yaml"),
        "--scale",
        "0.01",
        "--duration",
        "5",
        "--warmup",
        "1",
    ]
    full = subprocess.run(
        [*args, "--out", str(tmp_path / "a")],
        cwd=REPO,
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=120,
    )
    assert full.returncode == 0, full.stderr.decode()
    proc = subprocess.Popen(
        [*args, "--out", str(tmp_path / "b")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()
    assert "Traceback" not in stderr.decode() and "Broken pipe" not in stderr.decode()
    assert (tmp_path / "b" / "result.json").is_file()
