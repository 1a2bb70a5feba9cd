"""The search space of ``geoshard plan``: a small grammar of dimensions and their values.

::

    SEARCH  := DIM ("," DIM)*
    DIM     := NAME "=" LO ".." HI [":" STEP]     a range: every STEP from LO, HI included
             | NAME "=" VALUE ("|" VALUE)*        a list of values
    STEP    := NUMBER                             arithmetic (default 1 for counts)
             | "x" NUMBER                         geometric, factor > 1 (default x1.78,
                                                  4 per decade, for cache capacities)
    NAME    := api.servers | api.workers | warm.nodes | warm.workers | hot.nodes
             | hot.workers | l1.capacity_items | l2.capacity_items
             | regional.capacity_items | l1.capacity_bytes | l2.capacity_bytes
             | regional.capacity_bytes

Numbers may use exponents (``1e6``) and ``_`` separators. Pool dimensions (``api.*``,
``warm.*``, ``hot.*``) take **their own value in every region** the plan covers
(``--regions``, default all): the planner chooses per region. Cache dimensions are
spec-wide (the spec has one ``caches`` block). Example::

    warm.nodes=8..64,api.servers=16..64,l2.capacity_items=1e6..1e8

:func:`parse_search` raises :class:`~geoshard.errors.ConfigError` (exit code 2) naming
the bad token and restating the grammar.

Examples:
    >>> from geoshard.spec import load_spec
    >>> space = parse_search("api.servers=16..64:16,l2.capacity_items=1e6|1e7",
    ...                      load_spec("examples/local.yaml"))    # doctest: +SKIP
    >>> space.values("api.servers"), space.values("l2.capacity_items")  # doctest: +SKIP
    ([16, 32, 48, 64], [1000000, 10000000])
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from geoshard.errors import ConfigError, did_you_mean
from geoshard.spec import MAX_WORKERS, Spec

__all__ = [
    "CACHE_DIMS",
    "GRAMMAR",
    "MAX_VALUES",
    "POOL_DIMS",
    "SearchSpace",
    "default_search",
    "parse_search",
]

#: Pool dimensions: ``kind.field`` of every region's ``api``, ``warm`` or ``hot`` block.
POOL_DIMS = ("api.servers", "api.workers", "warm.nodes", "warm.workers", "hot.nodes", "hot.workers")
#: Cache dimensions: one value for the whole spec.
CACHE_DIMS = (
    "l1.capacity_items",
    "l2.capacity_items",
    "regional.capacity_items",
    "l1.capacity_bytes",
    "l2.capacity_bytes",
    "regional.capacity_bytes",
)
#: Values one dimension may take (the planner searches counts per region in cost order,
#: but every value of a cache dimension is a separate screen).
MAX_VALUES = 10_000
_MAX_CACHE_VALUES = 64
_MAX_NODES = 10_000  # core/spec.py MAX_NODES_PER_REGION
_MAX_CAPACITY = (1 << 63) - 1

GRAMMAR = (
    "grammar: NAME=LO..HI[:STEP|:xFACTOR] or NAME=V1|V2|..., comma-separated; "
    f"names: {', '.join(POOL_DIMS + CACHE_DIMS)}; "
    "e.g. warm.nodes=8..64,api.servers=16..64,l2.capacity_items=1e6..1e8"
)

_NUM = r"[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?"


@dataclass(frozen=True)
class SearchSpace:
    """The parsed search space.

    Attributes:
        text: the expression as given (or as built by :func:`default_search`).
        dims: ``(name, values)`` in the order given; values increasing.
        regions: the regions whose pools the pool dimensions size.
    """

    text: str
    dims: tuple[tuple[str, tuple[float, ...]], ...]
    regions: tuple[str, ...]

    def values(self, name: str) -> list[float]:
        """The values of a dimension (empty when it is not searched)."""
        return list(dict(self.dims).get(name, ()))

    @property
    def pool_dims(self) -> list[str]:
        """The searched pool dimensions."""
        return [n for n, _ in self.dims if n in POOL_DIMS]

    @property
    def cache_dims(self) -> list[str]:
        """The searched cache dimensions."""
        return [n for n, _ in self.dims if n in CACHE_DIMS]

    @property
    def size(self) -> int:
        """Candidates in the space: the cache combinations times every region's pool
        combinations."""
        per_region = math.prod(len(v) for n, v in self.dims if n in POOL_DIMS)
        caches = math.prod(len(v) for n, v in self.dims if n in CACHE_DIMS)
        return caches * per_region ** len(self.regions)


def _bad(token: str, why: str) -> ConfigError:
    return ConfigError(f"--search: bad token '{token}': {why}; {GRAMMAR}")


def _number(token: str, text: str) -> float:
    if not re.fullmatch(_NUM, text.strip()):
        raise _bad(token, f"'{text}' is not a number")
    v = float(text.strip().replace("_", ""))
    if not math.isfinite(v) or v <= 0:
        raise _bad(token, f"'{text}' must be a finite number > 0")
    return v


def _check_values(token: str, name: str, values: list[float]) -> list[float]:
    integer = name in POOL_DIMS
    top = (MAX_WORKERS if name.endswith(".workers") else _MAX_NODES) if integer else _MAX_CAPACITY
    out = []
    for v in values:
        if integer and v != int(v):
            raise _bad(token, f"{name} counts whole nodes or workers, so {v:g} must be an integer")
        if v > top:
            raise _bad(token, f"{name}={v:g} is above its bound {top}")
        out.append(float(round(v)) if integer or v >= 1 else v)
    if len(out) > (MAX_VALUES if integer else _MAX_CACHE_VALUES):
        raise _bad(
            token,
            f"{len(out)} values; at most {MAX_VALUES if integer else _MAX_CACHE_VALUES} "
            f"for {name} (use a larger :STEP)",
        )
    return sorted(set(out))


def _range(token: str, name: str, lo_t: str, hi_t: str, step_t: str | None) -> list[float]:
    lo, hi = _number(token, lo_t), _number(token, hi_t)
    if lo > hi:
        raise _bad(token, f"the range starts above its end ({lo:g} > {hi:g})")
    integer = name in POOL_DIMS
    if step_t is None:
        step_t = "1" if integer else "x1.7782794100389228"
    if step_t.startswith("x"):
        f = _number(token, step_t[1:])
        if f <= 1:
            raise _bad(token, f"a geometric step x{f:g} must be above 1")
        n = math.floor(math.log(hi / lo) / math.log(f) + 1e-9)
        if n + 2 > MAX_VALUES:
            raise _bad(token, f"more than {MAX_VALUES} values; use a larger factor")
        vals = [lo * f**k for k in range(n + 1)]
        vals = [float(round(v)) if integer else float(f"{v:.3g}") for v in vals]
    else:
        s = _number(token, step_t)
        if integer and s != int(s):
            raise _bad(token, f"the step of {name} must be an integer (got {s:g})")
        n = math.floor((hi - lo) / s + 1e-9)
        if n + 2 > MAX_VALUES:
            raise _bad(token, f"more than {MAX_VALUES} values; use a larger :STEP")
        vals = [lo + k * s for k in range(n + 1)]
    if vals[-1] < hi:
        vals.append(hi)
    return _check_values(token, name, vals)


def _spec_check(token: str, name: str, spec: Spec) -> None:
    if name not in CACHE_DIMS:
        return
    level, field = name.split(".")
    lvl = getattr(spec.caches, level)
    if lvl is None:
        raise _bad(
            token,
            f"the spec has no caches.{level}; add the level to the spec or drop this dimension",
        )
    other = "capacity_bytes" if field == "capacity_items" else "capacity_items"
    if getattr(lvl, field) is None:
        raise _bad(
            token, f"caches.{level} gives {other}, not {field}; search {level}.{other} instead"
        )


def parse_search(text: str, spec: Spec, regions: Sequence[str] | None = None) -> SearchSpace:
    """Parse ``--search`` for ``spec``.

    Args:
        text: the expression (see the module docstring).
        spec: the spec (cache dimensions must name levels it has).
        regions: the regions pool dimensions size (default: all of the spec's).

    Raises:
        ConfigError: a bad token, named, with the grammar.
    """
    regs = tuple(regions) if regions else tuple(spec.regions)
    if not text or not text.strip():
        raise ConfigError(f"--search is empty; {GRAMMAR}")
    dims: list[tuple[str, tuple[float, ...]]] = []
    seen: set[str] = set()
    for raw in text.split(","):
        token = raw.strip()
        if not token:
            raise _bad(raw, "an empty dimension (two commas in a row, or a trailing comma)")
        name, eq, rest = token.partition("=")
        name = name.strip()
        if not eq:
            raise _bad(token, "no '=' between the name and its values")
        if name not in POOL_DIMS + CACHE_DIMS:
            hint = did_you_mean(name, POOL_DIMS + CACHE_DIMS)
            raise _bad(token, f"unknown dimension '{name}'{hint}")
        if name in seen:
            raise _bad(token, f"{name} is given twice")
        seen.add(name)
        _spec_check(token, name, spec)
        rest = rest.strip()
        m = re.fullmatch(r"([^:|]+?)\.\.([^:|]+?)(?::(.+))?", rest)
        if m:
            vals = _range(token, name, m.group(1), m.group(2), m.group(3))
        elif ".." in rest:
            raise _bad(token, f"'{rest}' is not LO..HI[:STEP]")
        else:
            vals = _check_values(token, name, [_number(token, v) for v in rest.split("|")])
        dims.append((name, tuple(vals)))
    for a, b in (
        ("l1.capacity_items", "l1.capacity_bytes"),
        ("l2.capacity_items", "l2.capacity_bytes"),
        ("regional.capacity_items", "regional.capacity_bytes"),
    ):
        if a in seen and b in seen:
            raise ConfigError(f"--search: {a} and {b} size the same level; give one; {GRAMMAR}")
    return SearchSpace(text.strip(), tuple(dims), regs)


def default_search(spec: Spec) -> str:
    """The search when ``--search`` is not given: API servers, warm and hot nodes from half
    to 1.5 times the spec's (per region), and the largest cache level from a tenth to ten
    times its capacity."""
    parts = []
    for dim, get in (
        ("api.servers", lambda r: r.api.servers),
        ("warm.nodes", lambda r: r.warm.nodes),
        ("hot.nodes", lambda r: r.hot.nodes),
    ):
        vals = [get(r) for r in spec.regions.values()]
        lo = max(1, math.floor(0.5 * min(vals)))
        hi = max(lo, math.ceil(1.5 * max(vals)))
        parts.append(f"{dim}={lo}..{hi}")
    best = None
    for level in ("regional", "l2", "l1"):
        lvl = getattr(spec.caches, level)
        if lvl is not None:
            field = "capacity_items" if lvl.capacity_items is not None else "capacity_bytes"
            cap = float(getattr(lvl, field))
            cand = (cap, level, field)
            if best is None or level == "l2":
                best = cand
    if best is not None:
        cap, level, field = best
        parts.append(f"{level}.{field}={max(1.0, cap / 10):.3g}..{cap * 10:.3g}")
    return ",".join(parts)
