"""Detached processes of a local deployment: start, recognise by pid, stop with no orphan.

``geoshard up`` starts servers that outlive it; ``geoshard down`` (another process,
maybe days later) stops them. A process is therefore remembered as a
:class:`ProcessRecord`: its pid **and** its start time from ``/proc/<pid>/stat``, so a
pid the kernel has since reused for an unrelated process is never signalled. Every
process runs in its own session (its pid is its process-group id), so stopping one
signals its whole group (uvicorn's workers included) and then checks that no member of
the group is left.

Linux only (``/proc``), as is the local deployment.

Examples:
    >>> rec = spawn(["sleep", "30"], name="demo", log=Path("/tmp/demo.log"))  # doctest: +SKIP
    >>> is_alive(rec)                                                         # doctest: +SKIP
    True
    >>> stop(rec); is_alive(rec)                                              # doctest: +SKIP
    False
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from geoshard.errors import BackendError

__all__ = ["ProcessRecord", "group_members", "is_alive", "kill", "record_of", "spawn", "stop"]


class ProcessRecord(BaseModel):
    """A process the deployment started.

    Attributes:
        name: what it is (``eu-west/api``).
        pid: its pid (also its process-group id).
        start_ticks: its start time in clock ticks since boot (``/proc/<pid>/stat`` field 22).
        argv: the command line it was started with (to start it again).
        cwd: its working directory.
        log: where its stdout and stderr go ('' when it logs elsewhere).
    """

    model_config = ConfigDict(extra="forbid")
    name: str
    pid: int
    start_ticks: int
    argv: list[str]
    cwd: str = ""
    log: str = ""


def _stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, pgid, start_ticks)`` of ``pid``, or None when it does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    rest = text[text.rindex(")") + 2 :].split()
    return rest[0], int(rest[2]), int(rest[19])


def record_of(
    pid: int, name: str, argv: Sequence[str], *, cwd: str = "", log: str = ""
) -> ProcessRecord:
    """A record of the running process ``pid``.

    Raises:
        BackendError: ``pid`` is not running.
    """
    st = _stat(pid)
    if st is None:
        raise BackendError(f"{name} (pid {pid}) exited at once; see {log or 'its log'}")
    return ProcessRecord(name=name, pid=pid, start_ticks=st[2], argv=list(argv), cwd=cwd, log=log)


def is_alive(rec: ProcessRecord) -> bool:
    """True while the recorded process runs (a zombie or a reused pid counts as gone)."""
    st = _stat(rec.pid)
    return st is not None and st[2] == rec.start_ticks and st[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes whose process group is ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _stat(int(entry))
        if st is not None and st[1] == pgid and st[0] not in ("Z", "X"):
            out.append(int(entry))
    return out


def spawn(
    argv: Sequence[str],
    *,
    name: str,
    log: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ProcessRecord:
    """Start ``argv`` detached (own session, stdin closed, output appended to ``log``).

    Raises:
        BackendError: the program cannot be started, or exited at once.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(cwd) if cwd is not None else None,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        except OSError as exc:
            raise BackendError(f"cannot start {name} ({argv[0]}): {exc.strerror}") from None
    _CHILDREN[proc.pid] = proc
    return record_of(proc.pid, name, argv, cwd=str(cwd or ""), log=str(log))


#: Popen objects of the children this process started, so their exit status is reaped.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop(rec: ProcessRecord, *, timeout_s: float = 10.0, sig: int = signal.SIGTERM) -> bool:
    """Stop the recorded process and every member of its process group.

    Sends ``sig`` to the group, waits up to ``timeout_s`` for every member to exit, then
    SIGKILLs whatever is left. Does nothing when the process is already gone (a reused
    pid is left alone). Safe to call twice.

    Returns:
        True when something had to be stopped.
    """
    if not is_alive(rec):
        _reap(rec.pid)
        return False
    pgid = rec.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(rec.pid)
        if not is_alive(rec) and not group_members(pgid):
            return True
        time.sleep(0.05)
    for pid in group_members(pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and (is_alive(rec) or group_members(pgid)):
        _reap(rec.pid)
        time.sleep(0.05)
    _reap(rec.pid)
    return True


def kill(rec: ProcessRecord) -> None:
    """SIGKILL the recorded process group at once, as a crash would (chaos and tests)."""
    stop(rec, timeout_s=0.0, sig=signal.SIGKILL)
