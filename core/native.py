"""The simulator's hot path compiled with mypyc, and the guard that keeps it honest.

``setup.py`` compiles :data:`MODULES` with mypyc when the package is built (the C
compiler and Python headers are needed; ``GEOSHARD_PURE=1`` at build time skips it, and
a failed compile leaves the pure-Python package). The compiled modules are the same
source: mypyc turns the typed classes into C structs and their calls into C calls, which
makes the simulator's per-request work 1.3-1.4x faster (``benchmarks/bench_sim.py``).

The build records a SHA-256 of each module's source in ``_native.json``. At import,
:func:`install_guard` (run by ``geoshard/__init__.py``) checks the record against the
``.py`` files beside the compiled ones. The compiled modules call each other directly,
so they are used all together or not at all: when any source changed since it was
compiled (an editable install being edited), when a compiled file is missing, or when
``GEOSHARD_PURE`` is set at run time, every module in :data:`MODULES` is imported from
its ``.py`` file instead. :func:`status` says which, and ``geoshard simulate`` prints it.

This module imports nothing of geoshard: ``setup.py`` reads :data:`MODULES` from it
before the package exists.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["BUILD_RECORD", "MODULES", "install_guard", "pure_requested", "source_digest", "status"]

#: compiled modules -> their files, relative to the ``geoshard`` package folder
MODULES: dict[str, str] = {
    "geoshard.sim.engine": "sim/engine.py",
    "geoshard.sim.pools": "sim/pools.py",
    "geoshard.sim.simpy_adapter": "sim/simpy_adapter.py",
    "geoshard.sim.collect": "sim/collect.py",
    "geoshard.sim.warm": "sim/warm.py",
    "geoshard.sim.dists": "sim/dists.py",
    "geoshard.sim.calibrate": "sim/calibrate.py",
    "geoshard.storage.cache.walk": "storage/cache/walk.py",
    "geoshard.storage.cache.policies": "storage/cache/policies.py",
}
#: the build's record of the compiled sources (in the ``geoshard`` package folder)
BUILD_RECORD = "_native.json"
#: set (to anything but 0) at run time: import every module from its ``.py`` file
PURE_ENV = "GEOSHARD_PURE"

# the package folder as imported (an editable install's link tree, not the sources it links)
_HERE = Path(__file__).parent
_state: dict[str, object] = {}


def source_digest(path: Path) -> str:
    """The SHA-256 of a source file, as the build records it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _compiled_file(py: Path) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        so = py.with_name(py.stem + suffix)
        if so.is_file():
            return so
    return None


def pure_requested() -> bool:
    """True when :data:`PURE_ENV` asks for the sources (at install or at run time)."""
    return os.environ.get(PURE_ENV, "") not in ("", "0")


def _decide(root: Path) -> tuple[bool, str]:
    if pure_requested():
        return False, f"pure Python ({PURE_ENV} is set)"
    try:
        record = json.loads((root / BUILD_RECORD).read_text())["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return False, "pure Python (not compiled: the build found no C compiler or was told not to)"
    for mod, rel in MODULES.items():
        py = root / rel
        if _compiled_file(py) is None or mod not in record:
            return False, f"pure Python (no compiled {rel}; reinstall to compile it)"
        if not py.is_file() or source_digest(py) != record[mod]:
            return False, (
                f"pure Python ({rel} changed since it was compiled; "
                "run scripts/bootstrap to compile it again)"
            )
    return True, f"compiled with mypyc ({len(MODULES)} modules)"


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the modules of :data:`MODULES` as their ``.py`` files only."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        name = fullname.rpartition(".")[2] + ".py"
        for entry in path or ():
            f = Path(entry) / name
            if f.is_file():
                return importlib.util.spec_from_file_location(fullname, f)
        return None


def install_guard(root: Path | None = None) -> None:
    """Decide once per process whether the compiled modules are used (see the module
    text); when not, make every one of them import from its ``.py`` file."""
    if "compiled" in _state:
        return
    compiled, why = _decide(root or _HERE)
    _state["compiled"], _state["reason"] = compiled, why
    if not compiled and not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())


def status() -> dict[str, object]:
    """``{"compiled": bool, "reason": str}``: whether this process runs the compiled
    modules, and why (or why not)."""
    install_guard()
    return {"compiled": bool(_state["compiled"]), "reason": str(_state["reason"])}
