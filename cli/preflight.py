"""Checks that run before any long work: output paths, flags, and the size of a simulation.

A command that is going to fail should fail in the first second, naming the value, the
bound and the fix, and write nothing. The bounds here come from what the code can do:

* ``--seed``: NumPy seeds are non-negative; results store the seed as int64.
* ``--duration``: at most :data:`MAX_DURATION_S` (one simulated day, the default diurnal
  cycle): the simulator keeps a time-series row and a latency histogram per simulated
  second.
* requests: the expected number of arrivals (peak QPS x diurnal curve x campaigns x
  scale, integrated over the duration) at most ``--max-requests`` (default
  :data:`DEFAULT_MAX_REQUESTS`, about 15-20 minutes at the simulator's ~100k requests/s).
* rate segments (diurnal steps and campaign edges within the run) x regions at most
  :data:`MAX_RATE_CELLS`: the workload keeps one rate per region and segment.
* queue slots (servers x workers of every pool: a scaled run keeps every node) at most
  :data:`MAX_POOL_SLOTS`, and API servers (each has its own L1 cache) at most
  :data:`MAX_SIM_API_SERVERS`.
* users per jurisdiction at most :data:`MAX_SIM_KEYS`: the simulator maps popularity
  ranks to ids by ``rank x 2654435761 mod n`` in int64.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from geoshard.errors import ConfigError
from geoshard.keys import MAX_ID
from geoshard.spec import Spec

__all__ = [
    "DEFAULT_MAX_REQUESTS",
    "MAX_DURATION_S",
    "MAX_POOL_SLOTS",
    "MAX_RATE_CELLS",
    "MAX_SIM_API_SERVERS",
    "MAX_SIM_KEYS",
    "check_output_dir",
    "check_output_file",
    "check_simulate_flags",
    "check_simulation_size",
    "expected_requests",
    "rate_segment_count",
    "write_file_atomically",
]

MAX_DURATION_S = 86_400.0
DEFAULT_MAX_REQUESTS = 100_000_000
MAX_RATE_CELLS = 2_000_000
MAX_POOL_SLOTS = 5_000_000
MAX_SIM_API_SERVERS = 100_000
MAX_SIM_KEYS = MAX_ID // 2_654_435_761


# --------------------------------------------------------------------------- output paths


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_writable(directory: Path, flag: str, target: Path) -> None:
    """Create and delete a file in ``directory``: the only test that also holds for root."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".geoshard-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{flag} '{target}': cannot write in '{directory}' "
            f"({exc.strerror or exc}); choose a writable path"
        ) from None


def check_output_dir(path: Path, flag: str = "--out") -> None:
    """Check that a run directory can be written at ``path``; write nothing.

    An existing directory is reused; missing parents are created later (like
    ``mkdir -p``), so only the nearest existing ancestor must be a writable directory.

    Raises:
        ConfigError: ``path`` is a file, lies under a file, or cannot be written.
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{flag} '{path}' is an existing file, but a run directory is "
            "needed; give a directory path (it is created if missing)"
        )
    base = _nearest_existing(path)
    if not base.is_dir():
        raise ConfigError(
            f"{flag} '{path}': '{base}' is a file, so no directory can be "
            "created under it; choose another path"
        )
    _probe_writable(base, flag, path)


def check_output_file(path: Path, flag: str = "--out") -> None:
    """Check that a file can be written at ``path``; write nothing.

    The parent directory must exist (a typo in a directory name should not create a
    tree); an existing file is replaced.

    Raises:
        ConfigError: ``path`` is a directory, its parent is missing or a file, or it
            cannot be written.
    """
    if path.is_dir():
        raise ConfigError(
            f"{flag} '{path}' is a directory, but a file is needed; give a "
            f"file path such as {path / 'terraform.tfvars.json'}"
        )
    parent = path.parent
    if not parent.exists():
        base = _nearest_existing(parent)
        if base.exists() and not base.is_dir():
            raise ConfigError(
                f"{flag} '{path}': '{base}' is a file, so nothing can be "
                "created under it; choose another path"
            )
        raise ConfigError(
            f"{flag} '{path}': the directory '{parent}' does not exist; "
            f"create it (mkdir -p {parent}) or choose another path"
        )
    if not parent.is_dir():
        raise ConfigError(
            f"{flag} '{path}': '{parent}' is a file, so nothing can be "
            "created under it; choose another path"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(
            f"{flag} '{path}' exists and is not writable; change its "
            "permissions or choose another path"
        )
    _probe_writable(parent, flag, path)


def write_file_atomically(path: Path, text: str, flag: str = "--out") -> None:
    """Write ``text`` to ``path`` through a temporary file, so a failure leaves no half file.

    Raises:
        ConfigError: the write failed (disk full, permissions), naming the path.
    """
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise ConfigError(
            f"{flag} '{path}': cannot write ({exc.strerror or exc}); choose "
            "another path or free space"
        ) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


# --------------------------------------------------------------------------- simulate


def check_simulate_flags(
    duration: float, seed: int, scale: float, warmup: float | None, max_requests: int
) -> None:
    """The flags of ``geoshard simulate``, before the spec is even read.

    Raises:
        ConfigError: a flag outside its bound, named with the bound and an example.
    """
    if not 0 <= seed <= MAX_ID:
        raise ConfigError(
            f"--seed(={seed}) must be an integer in [0, {MAX_ID}] (NumPy seeds "
            "are non-negative; results store it as int64); e.g. --seed 1"
        )
    if not (math.isfinite(duration) and 0 < duration <= MAX_DURATION_S):
        raise ConfigError(
            f"--duration(={duration:g}) must be a number of seconds in "
            f"(0, {MAX_DURATION_S:g}] (one simulated day: the simulator keeps "
            "a row and a histogram per simulated second); e.g. --duration 60"
        )
    if not (math.isfinite(scale) and 0 < scale <= 1):
        raise ConfigError(
            f"--scale(={scale:g}) must be in (0, 1]; e.g. 0.001 for a laptop run "
            "of a planet-sized spec"
        )
    if warmup is not None and not (math.isfinite(warmup) and 0 <= warmup < duration):
        raise ConfigError(
            f"--warmup(={warmup:g}) must be >= 0 and below --duration "
            f"(={duration:g}); e.g. --warmup {duration * 0.1:g}"
        )
    if not 1 <= max_requests <= MAX_ID:
        raise ConfigError(
            f"--max-requests(={max_requests}) must be an integer in "
            f"[1, {MAX_ID}]; e.g. --max-requests {DEFAULT_MAX_REQUESTS}"
        )


def expected_requests(spec: Spec, duration_s: float, scale: float) -> float:
    """Expected simulated requests of a run (the simulator's own piecewise-constant rates,
    from the diurnal step it starts at; see :func:`geoshard.sim.workload.expected_requests`)."""
    from geoshard.sim.workload import expected_requests as _expected

    return _expected(spec, duration_s, scale)


def rate_segment_count(spec: Spec, duration_s: float) -> int:
    """Pieces of constant rate in a run: diurnal steps within it plus campaign edges."""
    w = spec.workload
    step_s = w.day_s / len(w.diurnal)
    return math.ceil(duration_s / step_s) + 2 * len(w.campaigns)


def check_simulation_size(spec: Spec, duration_s: float, scale: float, max_requests: int) -> None:
    """Refuse a simulation that would exceed the bounds of the module docstring.

    Raises:
        ConfigError: naming the size, the bound, and the flag or spec key that lowers it.
    """
    requests = expected_requests(spec, duration_s, scale)
    if not math.isfinite(requests) or requests > max_requests:
        fit = max_requests / requests * duration_s if math.isfinite(requests) and requests else 0
        raise ConfigError(
            f"the run would simulate about {requests:.3g} requests (workload.peak_qps x diurnal "
            f"x campaigns x --scale {scale:g} over --duration {duration_s:g} s); at most "
            f"--max-requests {max_requests} (about 100k simulated requests per second of wall "
            f"time): shorten --duration (to {fit:.3g} s or less), lower --scale, or raise "
            "--max-requests"
        )
    cells = rate_segment_count(spec, duration_s) * len(spec.regions)
    if cells > MAX_RATE_CELLS:
        raise ConfigError(
            f"the workload rate changes {rate_segment_count(spec, duration_s)} times in "
            f"--duration {duration_s:g} s (workload.diurnal has {len(spec.workload.diurnal)} "
            f"steps per workload.day_s {spec.workload.day_s:g} s) for {len(spec.regions)} "
            f"regions; at most {MAX_RATE_CELLS} rate cells: raise workload.day_s, use fewer "
            "diurnal steps, or shorten --duration"
        )
    api = sum(r.api.servers for r in spec.regions.values())
    if api > MAX_SIM_API_SERVERS:
        raise ConfigError(
            f"the run would simulate {api} API servers (each with its own L1 "
            f"cache; a scaled run keeps every node); at most "
            f"{MAX_SIM_API_SERVERS}: lower regions.*.api.servers"
        )
    slots = sum(
        r.api.servers * r.api.workers + r.hot.nodes * r.hot.workers + r.warm.nodes * r.warm.workers
        for r in spec.regions.values()
    )
    if slots > MAX_POOL_SLOTS:
        raise ConfigError(
            f"the run would simulate {slots} server slots (servers x workers of "
            f"every API, hot and warm pool; a scaled run keeps every node); at "
            f"most {MAX_POOL_SLOTS}: lower the servers, nodes or workers of the "
            "spec"
        )
    w = spec.workload
    for j, share in w.users_by_jurisdiction.items():
        n = round(w.users * share)
        if n > MAX_SIM_KEYS:
            raise ConfigError(
                f"workload.users x users_by_jurisdiction.{j} = {n} users; the "
                f"simulator maps ids in int64 up to {MAX_SIM_KEYS} per "
                "jurisdiction: lower workload.users"
            )
