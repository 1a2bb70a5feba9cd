"""Build hook: compile the simulator's hot modules with mypyc (see core/native.py).

Everything else about the package is in pyproject.toml. mypyc names a module by its
path, and the repository's folders map to ``geoshard.*`` only through pyproject's
package-dir, so ``build_ext`` copies the sources into the package layout under
build/native/ and compiles them from there. setup() itself only records a SHA-256 of
each source to be compiled in core/_native.json (packaged beside the code; the run-time
guard checks it), so that the metadata steps of a build do not compile anything.

``GEOSHARD_PURE=1`` skips the compile. Without a C compiler or mypyc the package is
built as pure Python, with a warning, and the guard imports the sources.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import runpy
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
STAGE = ROOT / "build" / "native"
RECORD = ROOT / "core" / "_native.json"
NATIVE: dict[str, Any] = runpy.run_path(str(ROOT / "core" / "native.py"))
MODULES: dict[str, str] = NATIVE["MODULES"]
PLACEHOLDER = "geoshard._native_placeholder"


def _warn(msg: str) -> None:
    print(f"geoshard setup: {msg}", file=sys.stderr)


def _package_dirs() -> dict[str, str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        dirs: dict[str, str] = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return dirs


def _folder(module: str) -> Path:
    """The repository file of a geoshard module (through pyproject's package-dir)."""
    dirs = _package_dirs()
    parts = module.split(".")
    for i in range(len(parts) - 1, 0, -1):
        pkg = ".".join(parts[:i])
        if pkg in dirs:
            return ROOT.joinpath(dirs[pkg], *parts[i:-1], parts[-1] + ".py")
    raise KeyError(module)


def _remove_inplace_builds() -> None:
    """Old compiled files beside the sources (an editable install builds in place) would
    pass for a build of the current sources."""
    for mod in MODULES:
        py = _folder(mod)
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            py.with_name(py.stem + suffix).unlink(missing_ok=True)
    for so in ROOT.glob("*__mypyc.*"):
        so.unlink()


def _stage() -> Path:
    """Copy every package's .py files into build/native/src/geoshard/... (mypy reads the
    modules the compiled ones import, for their types)."""
    src = STAGE / "src"
    shutil.rmtree(src, ignore_errors=True)
    for pkg, folder in _package_dirs().items():
        dest = src.joinpath(*pkg.split("."))
        for py in (ROOT / folder).rglob("*.py"):
            out = dest / py.relative_to(ROOT / folder)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(py, out)
    return src


def _mypyc_extensions() -> list[Any]:
    try:
        from mypyc.build import mypycify
    except ImportError as e:
        _warn(f"mypyc is not available ({e}); building pure Python")
        return []
    src = _stage()
    (STAGE / "mypy.ini").write_text(
        "[mypy]\npython_version = 3.11\nignore_missing_imports = True\n"
    )
    files = [str(src / "geoshard" / rel) for rel in MODULES.values()]
    cwd = os.getcwd()
    try:
        os.chdir(STAGE)  # mypyc writes its C files under ./build
        exts: list[Any] = mypycify(
            ["--config-file", str(STAGE / "mypy.ini"), *files], opt_level="3"
        )
    except (Exception, SystemExit) as e:  # noqa: BLE001 - any failure leaves pure Python
        _warn(f"mypyc could not compile the simulator ({e!r}); building pure Python")
        return []
    finally:
        os.chdir(cwd)
    for ext in exts:
        ext.sources = [s if os.path.isabs(s) else str(STAGE / s) for s in ext.sources]
        ext.include_dirs = [d if os.path.isabs(d) else str(STAGE / d) for d in ext.include_dirs]
        ext.optional = True  # no C compiler: a warning, and the guard imports the sources
    return exts


class BuildNative(build_ext):
    """build_ext that compiles :data:`MODULES` with mypyc (the placeholder extension only
    tells setuptools that there is something to build)."""

    def finalize_options(self) -> None:
        # the real extensions replace the placeholder before setuptools prepares them
        if any(e.name == PLACEHOLDER for e in self.distribution.ext_modules or []):
            if self.inplace:
                _remove_inplace_builds()
            self.distribution.ext_modules = (
                [] if NATIVE["pure_requested"]() else _mypyc_extensions()
            )
        super().finalize_options()

    def run(self) -> None:
        if self.extensions:
            super().run()
        built = [Path(self.get_ext_fullpath(e.name)).is_file() for e in self.extensions]
        if not self.extensions or not all(built):
            # nothing compiled, or a C compile failed (the extensions are optional): no
            # record, so that the guard and the checks know the package is pure Python
            if self.extensions:
                _warn("the C compiler failed; the package is pure Python")
            RECORD.unlink(missing_ok=True)
            (Path(self.build_lib) / "geoshard" / RECORD.name).unlink(missing_ok=True)


def _record() -> None:
    """Record the sources to be compiled; compiled files of other sources go first (in
    between, an import must not take them for a build of these)."""
    old = RECORD.read_text() if RECORD.is_file() else None
    RECORD.unlink(missing_ok=True)
    if NATIVE["pure_requested"]():
        _warn("GEOSHARD_PURE is set: building pure Python")
        _remove_inplace_builds()
        return
    sources = {mod: NATIVE["source_digest"](_folder(mod)) for mod in MODULES}
    text = json.dumps({"sources": sources}, indent=1, sort_keys=True) + "\n"
    if text != old:
        _remove_inplace_builds()
    RECORD.write_text(text)


_record()
setup(
    ext_modules=[Extension(PLACEHOLDER, sources=[], optional=True)],
    cmdclass={"build_ext": BuildNative},
)
