"""The compiled simulator (core/native.py): the guard's decision, and compiled == pure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from geoshard import native

REPO = Path(__file__).resolve().parents[2]


def _package(tmp_path: Path, *, record: bool = True, compiled: bool = True) -> Path:
    """A package folder with every module of MODULES, its compiled twin (an empty file:
    the guard only looks for it) and the build's record."""
    root = tmp_path / "geoshard"
    sources = {}
    for mod, rel in native.MODULES.items():
        py = root / rel
        py.parent.mkdir(parents=True, exist_ok=True)
        py.write_text(f"# {mod}\n")
        if compiled:
            py.with_name(py.stem + EXTENSION_SUFFIXES[0]).write_bytes(b"")
        sources[mod] = native.source_digest(py)
    if record:
        (root / native.BUILD_RECORD).write_text(json.dumps({"sources": sources}))
    return root


def test_a_package_compiled_from_its_sources_uses_the_compiled_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    compiled, why = native._decide(_package(tmp_path))
    assert compiled and "mypyc" in why


def test_a_source_edited_after_the_compile_makes_every_module_pure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    root = _package(tmp_path)
    (root / "sim" / "pools.py").write_text("# edited\n")
    compiled, why = native._decide(root)
    assert not compiled
    assert "sim/pools.py changed since it was compiled" in why and "scripts/bootstrap" in why


def test_no_record_or_a_missing_compiled_file_means_pure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    assert native._decide(_package(tmp_path / "a", record=False)) == (
        False,
        "pure Python (not compiled: the build found no C compiler or was told not to)",
    )
    compiled, why = native._decide(_package(tmp_path / "b", compiled=False))
    assert not compiled and "no compiled sim/engine.py" in why


def test_the_environment_variable_forces_pure_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(native.PURE_ENV, "1")
    assert native._decide(_package(tmp_path)) == (False, "pure Python (GEOSHARD_PURE is set)")
    monkeypatch.setenv(native.PURE_ENV, "0")
    assert native._decide(_package(tmp_path))[0]


def test_the_pure_finder_returns_the_source_file(tmp_path: Path) -> None:
    (tmp_path / "pools.py").write_text("X = 1\n")
    (tmp_path / ("pools" + EXTENSION_SUFFIXES[0])).write_bytes(b"")
    spec = native._SourceFirst().find_spec("geoshard.sim.pools", [str(tmp_path)])
    assert spec is not None and spec.origin == str(tmp_path / "pools.py")
    assert native._SourceFirst().find_spec("geoshard.sim.run", [str(tmp_path)]) is None


def _simulate(tmp_path: Path, pure: bool) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    if pure:
        env[native.PURE_ENV] = "1"
    out = tmp_path / ("pure" if pure else "compiled")
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "geoshard.cli", "simulate", str(REPO / "examples/local.yaml")),
            *("--duration", "8", "--seed", "3", "--workers", "1", "--json", "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    result: dict[str, object] = json.loads(proc.stdout)
    return result


@pytest.mark.slow
def test_the_compiled_simulator_gives_the_pure_simulators_results(tmp_path: Path) -> None:
    """Byte for byte, everything but the machine block (mypyc compiles the same source;
    a difference would be a semantic change of the compile, e.g. an int where a float
    was typed)."""
    if not native.status()["compiled"]:
        pytest.skip(f"this install runs {native.status()['reason']}")
    compiled = _simulate(tmp_path, pure=False)
    pure = _simulate(tmp_path, pure=True)
    assert compiled["machine"]["engine"]["compiled"] is True  # type: ignore[index]
    assert pure["machine"]["engine"]["compiled"] is False  # type: ignore[index]
    for r in (compiled, pure):
        del r["machine"]
    assert compiled == pure


def test_an_install_with_a_build_record_runs_compiled() -> None:
    """scripts/test reinstalls (and so recompiles) before the tests: a record that the
    guard refuses here means the build recorded sources it did not compile."""
    root = Path(native.__file__).parent
    if not (root / native.BUILD_RECORD).is_file() or os.environ.get(native.PURE_ENV):
        pytest.skip("this install was built without the compiled modules")
    if "changed since it was compiled" in str(native.status()["reason"]):
        pytest.skip(f"a source was edited after the install: {native.status()['reason']}")
    assert native.status() == {
        "compiled": True,
        "reason": f"compiled with mypyc ({len(native.MODULES)} modules)",
    }
