"""Detached processes by pid and start time, the state directory and the port allocator."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from geoshard.cluster import procs
from geoshard.cluster.ports import PortAllocator, port_is_listening
from geoshard.cluster.state import DeploymentState, StateDir, default_dir
from geoshard.errors import BackendError, ConfigError

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
#: a parent that starts a child in its own process group, then waits (as uvicorn does)
FAMILY = [
    sys.executable,
    "-c",
    (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(60)']); time.sleep(60)"
    ),
]


def test_a_spawned_process_is_recognised_and_stopped(tmp_path: Path) -> None:
    rec = procs.spawn(SLEEPER, name="sleeper", log=tmp_path / "s.log")
    try:
        assert procs.is_alive(rec)
        assert rec.start_ticks > 0 and rec.argv == SLEEPER
    finally:
        assert procs.stop(rec, timeout_s=5) is True
    assert not procs.is_alive(rec)
    assert procs.stop(rec) is False  # idempotent


def test_stopping_a_group_leaves_no_child(tmp_path: Path) -> None:
    rec = procs.spawn(FAMILY, name="family", log=tmp_path / "f.log")
    try:
        import time

        deadline = time.monotonic() + 10
        while len(procs.group_members(rec.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        members = procs.group_members(rec.pid)
        assert len(members) == 2, members
    finally:
        procs.stop(rec, timeout_s=5)
    assert procs.group_members(rec.pid) == []


def test_a_reused_pid_is_not_signalled() -> None:
    me = procs.record_of(os.getpid(), "me", ["python"])
    other = me.model_copy(update={"start_ticks": me.start_ticks + 1})
    assert procs.is_alive(me) and not procs.is_alive(other)
    assert procs.stop(other) is False  # would have signalled this very process otherwise
    assert procs.is_alive(me)


def test_a_program_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="cannot start nothing-here"):
        procs.spawn([str(tmp_path / "no-such-binary")], name="nothing-here", log=tmp_path / "l")


def test_state_round_trips_atomically_and_the_token_is_private(tmp_path: Path) -> None:
    d = StateDir(tmp_path / "dep")
    with pytest.raises(ConfigError, match=r"no deployment in .* start one with geoshard up"):
        d.read_state()
    with pytest.raises(ConfigError, match="no API token"):
        d.read_token()
    state = DeploymentState(
        name="local", spec_source="x.yaml", created_at=1.0, catalog_url="sqlite:///c.db"
    )
    d.write_state(state)
    assert d.read_state() == state
    token = d.write_token()
    assert d.read_token() == token and len(token) >= 40
    assert stat.S_IMODE(d.token_file.stat().st_mode) == 0o600
    assert {p.name for p in d.root.iterdir()} == {"state.json", "token"}


def test_a_foreign_state_file_is_refused(tmp_path: Path) -> None:
    d = StateDir(tmp_path)
    d.state_file.write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ConfigError, match="schema version 99"):
        d.read_state()
    d.state_file.write_text("not json")
    with pytest.raises(ConfigError, match="is not a deployment state file"):
        d.read_state()


def test_the_default_dir_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GEOSHARD_DIR", str(tmp_path / "x"))
    assert default_dir() == tmp_path / "x"
    monkeypatch.delenv("GEOSHARD_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_dir() == tmp_path / "state" / "geoshard" / "default"


def test_ports_are_handed_out_once_and_checked() -> None:
    ports = PortAllocator()
    got = [ports.take(f"p{i}") for i in range(20)]
    bus = ports.take("node", cluster_bus=True)
    assert len(set(got)) == 20 and bus not in got and bus + 10000 in ports.taken
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        assert port_is_listening("127.0.0.1", busy)
        with pytest.raises(BackendError, match=f"port {busy} \\(api\\) on 127.0.0.1 is taken"):
            ports.check_free(busy, "api")
