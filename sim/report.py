"""The human-facing artefacts of a simulation run: CSV tables, PNG plots, ``report.html``.

:func:`write_report` turns the result object and time series of
:func:`geoshard.sim.run.simulate_spec` into files beside ``result.json``:

- ``requests.csv`` (one row per request type and client region, plus ``all``),
  ``nodes.csv`` (one row per API pool, hot node and warm pool) and ``caches.csv``;
- ``latency_cdf.png``, ``timeseries.png`` and ``utilisation.png`` (matplotlib, Agg);
- ``report.html``: one self-contained page (inline CSS, images as base64 data URIs, no
  scripts, no web fonts) that opens offline.

Everything except the machine block at the bottom of ``report.html`` is a pure function
of the result and the time series, so two runs with the same spec and seed give
byte-identical CSV files, PNG files and HTML apart from that block. :func:`cdf_points`
compresses a :class:`~geoshard.sim.metrics.LogHistogram` into the CDF the latency plot
draws; :mod:`geoshard.sim.run` stores it as ``"cdf"`` beside each latency summary.

This module imports matplotlib only when it draws, and never imports
:mod:`geoshard.sim.run`, which imports it.

Examples:
    >>> from geoshard.spec import load_spec
    >>> from geoshard.sim.run import simulate_spec, write_run
    >>> result, ts = simulate_spec(load_spec("examples/local.yaml"), seed=1, duration_s=5)  # doctest: +SKIP
    >>> write_run("runs/local-1", result, ts)  # calls write_report  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import bisect
import csv
import html
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .metrics import LogHistogram, bucket_value

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "CACHE_FIELDS",
    "NODE_FIELDS",
    "PLOTS",
    "REQUEST_FIELDS",
    "UTILISATION_TOP_N",
    "cdf_points",
    "write_report",
]

REQUEST_FIELDS = (
    "type",
    "region",
    "count",
    "failed",
    "degraded",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "p999_ms",
    "mean_ms",
    "slo_attainment",
)
NODE_FIELDS = (
    "node",
    "region",
    "kind",
    "capacity",
    "requests",
    "utilisation",
    "offered_load",
    "peak_offered_load",
    "peak_phase",
    "max_queue",
    "wait_ms",
    "wait_p99_ms",
)
CACHE_FIELDS = ("level", "hits", "misses", "hit_ratio")
#: PNG files written by :func:`write_report`, in the order the report shows them.
PLOTS = ("latency_cdf.png", "timeseries.png", "utilisation.png")
#: the utilisation chart shows at most this many nodes (the busiest).
UTILISATION_TOP_N = 40

_DPI = 100
_KIND_COLOURS = {"api": "#4c72b0", "hot": "#dd8452", "warm": "#55a868", "other": "#8c8c8c"}
_TYPE_ORDER = ("feature_read", "recommend", "interaction_write")
_QUANTILE_KEYS = (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99), ("p999_ms", 0.999))


# --------------------------------------------------------------------------- CDF


def _sig(x: float, digits: int = 6) -> float:
    """``x`` rounded to ``digits`` significant digits."""
    if x == 0 or not math.isfinite(x):
        return 0.0 if x == 0 else x
    return float(f"{x:.{digits}g}")


def cdf_points(hist: LogHistogram, max_points: int = 200) -> list[list[float]]:
    """The empirical CDF of ``hist`` as at most ``max_points`` ``[latency_ms, fraction]`` pairs.

    Each point is a non-empty bucket: its reported value (the geometric midpoint that
    :meth:`LogHistogram.quantile` returns, so ``p99_ms`` of the same histogram lies on this
    curve) and the fraction of values in that bucket or below. With more non-empty
    buckets than ``max_points``, the points kept are the buckets that hold evenly spaced
    quantiles (half the budget) and quantiles spaced evenly in ``-log10(1 - q)`` (the
    other half, so the tail up to ``1 - 1/count`` stays resolved); the lowest and highest
    buckets and those of p50, p95, p99 and p99.9 are always kept. Both coordinates are rounded to 6 significant digits, both
    are non-decreasing, and the last fraction is exactly ``1.0``. A bucket of exact zeros
    gives latency ``0.0`` (not drawable on a log axis).

    Args:
        hist: the histogram (not modified).
        max_points: upper bound on the number of points (>= 8).

    Returns:
        ``[[latency_ms, cumulative_fraction], ...]``; ``[]`` for an empty histogram.

    Raises:
        ValueError: ``max_points < 8``.

    Examples:
        >>> h = LogHistogram()
        >>> for v in (1.0, 2.0, 2.0, 4.0):
        ...     h.add(v)
        >>> [f for _, f in cdf_points(h)]
        [0.25, 0.75, 1.0]
    """
    if max_points < 8:
        raise ValueError(f"max_points (={max_points}) must be >= 8")
    if not hist.count:
        return []
    keys = sorted(hist.counts)
    cum: list[int] = []
    seen = 0
    for b in keys:
        seen += hist.counts[b]
        cum.append(seen)
    total = cum[-1]
    if len(keys) <= max_points:
        chosen = list(range(len(keys)))
    else:
        # the reported quantiles always lie on the curve
        levels = [q for _, q in _QUANTILE_KEYS]
        idx = {0, len(keys) - 1}
        n_lin = (max_points - 2 - len(levels)) // 2
        n_tail = max_points - 2 - len(levels) - n_lin
        levels += [j / n_lin for j in range(1, n_lin + 1)]
        top = math.log10(total) if total > 1 else 1.0
        levels += [1.0 - 10.0 ** (-top * j / n_tail) for j in range(1, n_tail + 1)]
        for q in levels:
            rank = max(1, math.ceil(q * total))
            idx.add(bisect.bisect_left(cum, rank))
        chosen = sorted(i for i in idx if i < len(keys))
    out = [[_sig(bucket_value(keys[i])), _sig(cum[i] / total)] for i in chosen]
    out[-1][1] = 1.0
    return out


def _cdf_from_summary(lat: dict[str, Any]) -> list[list[float]]:
    """A coarse CDF through the four reported quantiles, for results without ``"cdf"``."""
    pts: list[list[float]] = []
    for key, q in _QUANTILE_KEYS:
        v = lat.get(key)
        if isinstance(v, (int, float)) and v > 0 and (not pts or v >= pts[-1][0]):
            pts.append([float(v), q])
    return pts


# --------------------------------------------------------------------------- tables


def _request_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for t, per in _ordered_types(result["metrics"].get("requests", {})):
        for region, lat in per.items():
            rows.append(
                {"type": t, "region": region, **{k: lat.get(k) for k in REQUEST_FIELDS[2:]}}
            )
    return rows


def _ordered_types(requests: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Request types in the usual order (then any others, sorted); ``all`` last per type."""
    names = [t for t in _TYPE_ORDER if t in requests] + sorted(set(requests) - set(_TYPE_ORDER))
    out = []
    for t in names:
        per = requests[t]
        regions = [r for r in per if r != "all"] + (["all"] if "all" in per else [])
        out.append((t, {r: per[r] for r in regions}))
    return out


def _node_kind(name: str) -> str:
    """``api``, ``hot`` or ``warm`` from a pool name such as ``eu-west/hot-2``."""
    tail = name.rsplit("/", 1)[-1]
    return next((kind for kind in ("api", "hot", "warm") if tail.startswith(kind)), "other")


def _node_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, n in result["metrics"].get("nodes", {}).items():
        rows.append(
            {
                "node": name,
                "region": name.split("/", 1)[0] if "/" in name else "",
                "kind": _node_kind(name),
                **{k: n.get(k) for k in NODE_FIELDS[3:]},
            }
        )
    return rows


def _cache_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"level": lvl, **{k: c.get(k) for k in CACHE_FIELDS[1:]}}
        for lvl, c in result["metrics"].get("caches", {}).items()
    ]


def _write_csv(path: Path, fields: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(fields), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


# --------------------------------------------------------------------------- plots

_RC: dict[str, Any] = {
    "svg.hashsalt": "geoshard",
    "path.simplify": True,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.framealpha": 0.85,
}


def _new_figure(w_in: float, h_in: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(w_in, h_in), dpi=_DPI, layout="constrained")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()


def _slo_targets(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    return (result.get("spec") or {}).get("slo", {}).get("latency", {}) or {}


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks covering ``[lo, hi]`` (a log axis with readable labels)."""
    ticks: list[float] = []
    e = math.floor(math.log10(lo)) if lo > 0 else 0
    while True:
        for m in (1, 2, 5):
            v = m * 10.0**e
            if v > hi:
                return ticks
            if v >= lo:
                ticks.append(v)
        e += 1


def _plot_latency_cdf(result: dict[str, Any]) -> bytes:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    types = _ordered_types(result["metrics"].get("requests", {}))
    targets = _slo_targets(result)
    fig = _new_figure(12.0, 4.8)
    if not types:
        ax = fig.add_subplot()
        ax.text(
            0.5,
            0.5,
            "no requests completed after the warm-up",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_axis_off()
        return _png(fig)
    axes = fig.subplots(1, len(types), squeeze=False, sharey=True)[0]
    regions = [r for r in dict.fromkeys(r for _, per in types for r in per) if r != "all"]
    colour = {r: f"C{i % 10}" for i, r in enumerate(regions)}
    approx = False
    y_lo, y_top = 0.02, 0.9999
    for ax, (t, per) in zip(axes, types, strict=False):
        xs_all: list[float] = []
        for region, lat in per.items():
            pts = lat.get("cdf")
            style: dict[str, Any] = {"drawstyle": "steps-post"}
            if not pts:
                pts = _cdf_from_summary(lat)
                approx = approx or bool(pts)
                style = {"marker": "o", "ms": 3}
            pts = [p for p in pts if p[0] > 0]
            if not pts:
                continue
            xs = [p[0] for p in pts]
            # logit cannot show 0 or 1: the last step is drawn up to the top of the axis
            ys = [min(max(p[1], y_lo / 2), y_top) for p in pts]
            xs_all += xs
            if region == "all":
                ax.plot(xs, ys, color="black", lw=2.0, label="all regions", zorder=3, **style)
            else:
                ax.plot(xs, ys, color=colour[region], lw=1.2, alpha=0.85, label=region, **style)
        target = targets.get(t) or {}
        for key, ls, name in (("p99_ms", "--", "p99"), ("p50_ms", ":", "p50")):
            v = target.get(key)
            if v:
                ax.axvline(v, color="crimson", ls=ls, lw=1.2)
                ax.text(
                    v,
                    y_lo,
                    f" SLO {name} {v:g} ms",
                    rotation=90,
                    color="crimson",
                    fontsize=7,
                    ha="right",
                    va="bottom",
                )
        ax.axhline(0.99, color="grey", lw=0.6)
        ax.set_xscale("log")
        ax.set_yscale("logit", nonpositive="clip")
        ax.set_ylim(y_lo, y_top)
        ax.yaxis.set_major_locator(FixedLocator([0.1, 0.5, 0.9, 0.99, 0.999, 0.9999]))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v * 100:g} %"))
        ax.yaxis.set_minor_locator(NullLocator())
        if xs_all:
            lo, hi = min(xs_all), max(xs_all)
            for key in ("p50_ms", "p99_ms"):
                if target.get(key):
                    lo, hi = min(lo, float(target[key])), max(hi, float(target[key]))
            lo, hi = lo / 1.25, hi * 1.25
            ax.set_xlim(lo, hi)
            ticks = _log_ticks(lo, hi)
            if len(ticks) < 3:  # a narrow range: label the minor decades too
                ticks = [
                    v
                    for v in (m * 10.0**e for e in range(-3, 6) for m in range(1, 10))
                    if lo <= v <= hi
                ]
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.set_title(t)
        ax.set_xlabel("latency (ms, log scale)")
    axes[0].set_ylabel("completed requests at or below (logit scale)")
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=False):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside right upper", title="client region")
    title = "Latency CDF by client region (after warm-up)"
    if approx:
        title += "; approximate: drawn through p50, p95, p99 and p99.9 only"
    fig.suptitle(title, fontsize=11)
    return _png(fig)


def _plot_timeseries(result: dict[str, Any], timeseries: list[dict[str, Any]]) -> bytes:
    fig = _new_figure(12.0, 8.0)
    axes = fig.subplots(4, 1, sharex=True, height_ratios=[3, 2, 1.5, 1.5])
    ax_p99, ax_req, ax_err, ax_hit = axes
    t = [float(r["t_s"]) + 0.5 for r in timeseries]  # a row covers [t_s, t_s + 1)
    duration = float(result.get("duration_s") or (len(t) or 1))
    warmup = float(result.get("warmup_s") or 0.0)
    targets = _slo_targets(result)
    colours = {ty: f"C{i}" for i, ty in enumerate(_TYPE_ORDER)}
    if t:
        for ty in _TYPE_ORDER:
            col = f"p99_{ty}_ms"
            if not any(r.get(col) for r in timeseries):
                continue
            ax_p99.plot(
                t,
                [r.get(col) or float("nan") for r in timeseries],
                color=colours[ty],
                lw=1.3,
                label=f"p99 {ty}",
            )
        ax_req.plot(
            t,
            [r.get("requests_per_s_full_scale", r["requests"]) for r in timeseries],
            color="C2",
            lw=1.4,
            label="requests/s",
        )
        ax_err.bar(t, [r["errors"] for r in timeseries], width=1.0, color="C3", label="errors/s")
        ax_hit.plot(
            t, [r["hit_ratio"] for r in timeseries], color="C4", lw=1.2, label="cache hit ratio"
        )
    else:
        ax_p99.text(
            0.5, 0.5, "empty time series", ha="center", va="center", transform=ax_p99.transAxes
        )
    for ty, v in targets.items():
        if not v.get("p99_ms") or ty not in colours:
            continue
        lim = float(v["p99_ms"])
        ax_p99.axhline(
            lim, color=colours[ty], ls=(0, (4, 3)), lw=1.0, alpha=0.8, label=f"{ty} p99 target"
        )
        ax_p99.annotate(
            f"{lim:g} ms",
            (1.0, lim),
            xycoords=("axes fraction", "data"),
            xytext=(2, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
            color=colours[ty],
        )
    ax_p99.set_ylim(bottom=0)
    for ax in axes:
        ax.set_xlim(0, duration)
        if warmup > 0:
            ax.axvspan(0, warmup, color="grey", alpha=0.12, lw=0)
    ax_p99.text(
        warmup / 2 if warmup > 0 else 0,
        1.0,
        "warm-up" if warmup > 0 else "",
        transform=ax_p99.get_xaxis_transform(),
        ha="center",
        va="bottom",
        fontsize=7,
        color="dimgrey",
    )
    spec = result.get("spec") or {}
    for c in (spec.get("workload") or {}).get("campaigns") or []:
        a, d = float(c.get("start_s", 0)), float(c.get("duration_s", 0))
        ax_req.axvspan(a, min(a + d, duration), color="gold", alpha=0.18, lw=0)
        ax_req.text(
            a,
            0.04,
            f" campaign {c.get('name', '')} x{c.get('multiplier', '')}",
            transform=ax_req.get_xaxis_transform(),
            va="bottom",
            fontsize=7,
            color="darkgoldenrod",
        )
    faults = result.get("faults") or []
    for i, f in enumerate(faults):
        a, b = float(f["at_s"]), float(f.get("end_s", f["at_s"] + f.get("duration_s", 0)))
        col = "C3" if f.get("kind") != "latency_spike" else "C1"
        for ax in axes:
            ax.axvspan(a, b, color=col, alpha=0.10, lw=0)
            for key, ls in (("router_sees_at_s", "--"), ("router_sees_end_at_s", ":")):
                x = f.get(key)
                if x is not None and 0 <= x <= duration:
                    ax.axvline(x, color=col, ls=ls, lw=1.0)
        label = f"{f.get('kind', 'fault')} {f.get('target', '')}".strip()
        if f.get("extra_ms"):
            label += f" +{f['extra_ms']:g} ms"
        # alternate heights so the labels of overlapping faults do not print over each other
        ax_p99.text(
            a,
            0.97 if i % 2 == 0 else 0.84,
            f" {label}",
            transform=ax_p99.get_xaxis_transform(),
            ha="left",
            va="top",
            fontsize=8,
            color=col,
            fontweight="bold",
        )
        if f.get("router_sees_at_s") is not None:
            ax_err.text(
                float(f["router_sees_at_s"]),
                0.95,
                " router sees it",
                transform=ax_err.get_xaxis_transform(),
                va="top",
                fontsize=7,
                color=col,
            )
    ax_p99.set_ylabel("p99 (ms)")
    ax_req.set_ylabel("requests/s\n(full-scale)")
    ax_err.set_ylabel("errors/s")
    ax_hit.set_ylabel("user-feature\nlookups served\nby a cache")
    ax_hit.set_ylim(0, 1)
    ax_err.set_ylim(bottom=0)
    ax_req.set_ylim(bottom=0)
    ax_hit.set_xlabel("simulated time (s)")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
    extra = ""
    if faults:
        extra = "; shaded: faults, dashed: router detects, dotted: router sees recovery"
    fig.suptitle(f"Over time, per simulated second (grey: warm-up{extra})", fontsize=10)
    return _png(fig)


def _load_key(result: dict[str, Any]) -> tuple[str, str]:
    """The node figure the load chart ranks and draws, and its axis label.

    The peak offered load (service demand / capacity in the busiest phase of the run): it
    goes past 100 % when a pool is overloaded, where utilisation stops at 100 %, and it is
    what the verdict's capacity gate judges. Results without it fall back to utilisation.
    """
    nodes = result["metrics"].get("nodes", {})
    if nodes and all("peak_offered_load" in n for n in nodes.values()):
        return (
            "peak_offered_load",
            (
                "offered load in the busiest phase (service demand / "
                "capacity; > 100 % means a growing backlog)"
            ),
        )
    return ("utilisation", "utilisation (busy worker time / capacity x measured window)")


def _ceiling(result: dict[str, Any]) -> float:
    return float(((result.get("spec") or {}).get("slo") or {}).get("load_ceiling", 0.85))


def _plot_utilisation(result: dict[str, Any]) -> bytes:
    from matplotlib.patches import Patch

    key, label = _load_key(result)
    rows = sorted(_node_rows(result), key=lambda r: (-(r[key] or 0.0), r["node"]))
    shown = rows[:UTILISATION_TOP_N]
    fig = _new_figure(10.0, 8.0)
    ax = fig.add_subplot()
    if not shown:
        ax.text(0.5, 0.5, "no nodes", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _png(fig)
    ys = list(range(len(shown)))
    vals = [float(r[key] or 0.0) for r in shown]
    ax.barh(ys, vals, color=[_KIND_COLOURS[r["kind"]] for r in shown], height=0.75)
    ax.set_yticks(ys, [r["node"] for r in shown], fontsize=7 if len(shown) > 20 else 8)
    ax.invert_yaxis()
    for y, v in zip(ys, vals, strict=False):
        ax.text(v, y, f" {v:.0%}" if v >= 0.01 else f" {v:.1%}", va="center", fontsize=7)
    top = max(1.0, max(vals) * 1.12)
    ax.set_xlim(0, top)
    ceiling = _ceiling(result)
    limit = ax.axvline(
        ceiling, color="crimson", ls="--", lw=1.2, label=f"load ceiling {ceiling:.0%}"
    )
    ax.xaxis.set_major_formatter("{x:.0%}")
    ax.set_xlabel(label)
    ax.grid(axis="y", visible=False)
    kinds = [k for k in ("api", "hot", "warm", "other") if any(r["kind"] == k for r in shown)]
    handles = [Patch(color=_KIND_COLOURS[k], label=k) for k in kinds]
    fig.legend(handles=[*handles, limit], loc="outside lower center", ncols=len(handles) + 1)
    hot_n = sum(1 for r in rows if (r[key] or 0.0) > ceiling)
    what = "peak offered load" if key == "peak_offered_load" else "utilisation"
    if len(rows) > len(shown):
        title = f"Busiest {len(shown)} of {len(rows)} nodes by {what} (all in nodes.csv)"
    else:
        title = f"{what[0].upper()}{what[1:]} of all {len(rows)} nodes"
    ax.set_title(f"{title}; {hot_n} above the {ceiling:.0%} ceiling")
    return _png(fig)


def _render_plots(result: dict[str, Any], timeseries: list[dict[str, Any]]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context(_RC):  # type: ignore[arg-type]
        return {
            "latency_cdf.png": _plot_latency_cdf(result),
            "timeseries.png": _plot_timeseries(result, timeseries),
            "utilisation.png": _plot_utilisation(result),
        }


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 margin:0 auto;max-width:1240px;padding:0 20px 40px;color:#1d2330;line-height:1.4}
h1{font-size:1.6em;margin:24px 0 4px}h2{font-size:1.25em;margin:28px 0 8px;
 border-bottom:1px solid #d8dde6;padding-bottom:4px}h3{font-size:1.05em;margin:16px 0 6px}
.sub{color:#5b6473;margin:0 0 16px}
.banner{padding:14px 18px;border-radius:6px;margin:12px 0;font-size:1.05em}
.pass{background:#e6f4ea;border:1px solid #34a853}.fail{background:#fdecea;border:1px solid #d93025}
.banner strong{font-size:1.2em}.banner ul{margin:6px 0 0 18px;padding:0}
.kpis{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.kpi{border:1px solid #d8dde6;border-radius:6px;padding:8px 12px;min-width:140px}
.kpi b{display:block;font-size:1.3em}.kpi span{color:#5b6473;font-size:.85em}
table{border-collapse:collapse;margin:6px 0 12px;font-size:.9em}
th,td{border:1px solid #d8dde6;padding:3px 8px;text-align:right}
th{background:#f2f4f8}td.l,th.l{text-align:left}tr.all td{font-weight:600;background:#f7f8fb}
td.bad{background:#fdecea;color:#a50e0e}td.ok{color:#137333}
img{max-width:100%;border:1px solid #e4e7ed;margin:6px 0}
pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:.85em}
.muted{color:#5b6473;font-size:.9em}
footer{margin-top:36px;border-top:2px dashed #d8dde6;padding-top:8px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x == int(x) and abs(x) < 1e15:
            return f"{int(x):,}"
        return f"{x:,.6g}" if abs(x) >= 1 else f"{x:.4g}"
    return str(x)


def _pct(x: Any, digits: int = 2) -> str:
    return "—" if x is None else f"{float(x) * 100:.{digits}f} %"


def _table(
    head: Sequence[str],
    rows: Iterable[Sequence[Any]],
    left: int = 1,
    row_class: Sequence[str] | None = None,
) -> str:
    """An HTML table; cells are ``(text, css_class)`` pairs or plain values (escaped here)."""
    out = ["<table><thead><tr>"]
    out += [
        f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>"
        for i, h in enumerate(head)
    ]
    out.append("</tr></thead><tbody>")
    for ri, row in enumerate(rows):
        cls = row_class[ri] if row_class else ""
        out.append(f'<tr class="{_e(cls)}">' if cls else "<tr>")
        for i, cell in enumerate(row):
            text, c = cell if isinstance(cell, tuple) else (_fmt(cell), "")
            classes = " ".join(x for x in ("l" if i < left else "", c) if x)
            out.append(
                f'<td class="{classes}">{_e(text)}</td>' if classes else f"<td>{_e(text)}</td>"
            )
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _mark(v: Any, limit: Any) -> tuple[str, str]:
    """A table cell that turns red when ``v`` exceeds ``limit``."""
    bad = limit is not None and v is not None and float(v) > float(limit)
    return (_fmt(v), "bad" if bad else "")


def _kpi(value: str, label: str) -> str:
    return f'<div class="kpi"><b>{_e(value)}</b><span>{_e(label)}</span></div>'


def _html(
    result: dict[str, Any], timeseries: list[dict[str, Any]], images: dict[str, bytes]
) -> str:
    m = result.get("metrics", {})
    spec = result.get("spec") or {}
    name = result.get("spec_name") or spec.get("name") or "spec"
    slo = m.get("slo", {"passed": True, "failures": []})
    res = m.get("residency", {})
    counts = m.get("counts", {})
    targets = _slo_targets(result)
    attainment_goal = (spec.get("slo") or {}).get("attainment")
    title = (
        f"geoshard simulate: {name} (seed {result.get('seed')}, scale {result.get('scale')}, "
        f"{_fmt(result.get('duration_s'))} s)"
    )
    p: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Simulation of <code>{_e(name)}</code></h1>",
        (
            f'<p class="sub">seed {_e(result.get("seed"))} · scale {_e(result.get("scale"))} · '
            f"{_e(_fmt(result.get('duration_s')))} simulated s (warm-up "
            f"{_e(_fmt(result.get('warmup_s')))} s) · {_e(_fmt(m.get('arrivals')))} arrivals · "
            f"result schema v{_e(result.get('schema_version'))} · geoshard "
            f"{_e((result.get('versions') or {}).get('geoshard', '?'))}</p>"
        ),
    ]
    nav = [
        ("residency", "residency"),
        ("requests", "requests"),
        ("counts", "errors"),
        ("caches", "caches"),
        ("cost", "cost"),
        ("faults", "faults"),
        ("nodes", "nodes"),
        ("assumptions", "assumptions"),
        ("plots", "plots"),
        ("machine", "machine"),
    ]
    p.append('<p class="muted">' + " · ".join(f'<a href="#{a}">{t}</a>' for a, t in nav) + "</p>")
    # verdict (the same object as the terminal, result.json and the exit code)
    verdict = result.get("verdict") or {
        "passed": slo.get("passed", True),
        "failures": [{"kind": "", "name": "", "message": f} for f in slo.get("failures") or []],
    }
    fails = list(verdict.get("failures") or [])
    failing = {f.get("name") for f in fails}
    if verdict.get("passed", not fails):
        p.append(
            '<div class="banner pass" id="slo-verdict"><strong>VERDICT: PASSED</strong> '
            "every request type met its latency and attainment targets in every region, "
            "no pool exceeded its load ceiling, and the residency audit found nothing."
            "</div>"
        )
    else:
        items = "".join(f"<li>{_e(f.get('message'))}</li>" for f in fails)
        p.append(
            f'<div class="banner fail" id="slo-verdict"><strong>VERDICT: FAILED</strong> '
            f"({len(fails)} failure{'s' if len(fails) != 1 else ''})<ul>{items}</ul></div>"
        )
    # residency
    viol = int(res.get("violations") or 0)
    cls = "fail" if viol else "pass"
    p.append('<h2 id="residency">Residency audit</h2>')
    p.append(
        f'<div class="banner {cls}"><strong>{_e(_fmt(viol))} violation'
        f"{'s' if viol != 1 else ''}</strong> in {_e(_fmt(res.get('checks', 0)))} checks "
        "(every read and write placement the simulator made was checked against the "
        "residency policy).</div>"
    )
    examples = res.get("examples") or []
    if examples:
        p.append(
            "<h3>Examples</h3><ul>"
            + "".join(f"<li><code>{_e(x)}</code></li>" for x in examples)
            + "</ul>"
        )
    # headline numbers
    req = m.get("requests", {})
    kpis = []
    for t, per in _ordered_types(req):
        a = per.get("all")
        if a:
            kpis.append(_kpi(f"{_fmt(a.get('p99_ms'))} ms", f"{t} p99"))
    kpis.append(_kpi(_fmt(counts.get("failed")), "failed requests"))
    kpis.append(_kpi(_fmt(counts.get("degraded")), "degraded requests"))
    cost = m.get("cost_per_hour_usd") or {}
    total_cost = (cost.get("full_scale") or cost).get("total")
    if total_cost is not None:
        kpis.append(_kpi(f"${_fmt(total_cost)}/h", "cost of the topology"))
    p.append('<div class="kpis">' + "".join(kpis) + "</div>")
    # requests
    p.append('<h2 id="requests">Requests by type and client region</h2>')
    p.append(
        '<p class="muted">After the warm-up. Attainment: share of requests (failed ones '
        "included) answered within the type's p99 target, degraded answers counting as "
        "misses unless the SLO accepts them"
        + (f"; goal {_e(_pct(attainment_goal))}" if attainment_goal is not None else "")
        + ". Red: misses its target. Also in <code>requests.csv</code>.</p>"
    )
    rows, rcls = [], []
    for t, per in _ordered_types(req):
        tgt = targets.get(t) or {}
        for region, lat in per.items():
            bad = f"{t}/{region}" in failing
            att = lat.get("slo_attainment")
            att_bad = (
                bad and attainment_goal is not None and att is not None and att < attainment_goal
            )
            rows.append(
                [
                    t,
                    region,
                    lat.get("count"),
                    lat.get("failed"),
                    lat.get("degraded", 0),
                    _mark(lat.get("p50_ms"), tgt.get("p50_ms") if bad else None),
                    _fmt(lat.get("p95_ms")),
                    _mark(lat.get("p99_ms"), tgt.get("p99_ms") if bad else None),
                    _fmt(lat.get("p999_ms")),
                    _fmt(lat.get("mean_ms")),
                    (_pct(att), "bad" if att_bad else "ok"),
                    f"{_fmt(tgt.get('p50_ms'))} / {_fmt(tgt.get('p99_ms'))}" if tgt else "—",
                ]
            )
            rcls.append("all" if region == "all" else "")
    p.append(
        _table(
            [
                "type",
                "client region",
                "answered",
                "failed",
                "degraded",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "p99.9 ms",
                "mean ms",
                "attainment",
                "SLO p50 / p99 ms",
            ],
            rows,
            left=2,
            row_class=rcls,
        )
    )
    # counts
    p.append('<h2 id="counts">Degraded, failed, shed and re-routed requests</h2>')
    labels = [
        ("degraded", "degraded (served with a fallback)"),
        ("failed", "failed"),
        ("shed", "shed (admission control)"),
        ("spilled", "spilled to another region"),
        ("stale_route_errors", "stale route errors (router not yet aware of a fault)"),
        ("no_allowed_region", "no allowed region (residency left no healthy option)"),
    ]
    crow = [[lab, counts.get(k)] for k, lab in labels if k in counts]
    for stage, n in (counts.get("degraded_by_stage") or {}).items():
        crow.append([f"degraded at stage {stage}", n])
    if "health_epochs" in m:
        crow.append(["router health epochs", m["health_epochs"]])
    p.append(_table(["count", "requests"], crow))
    entry = m.get("entry_regions") or {}
    if entry:
        entries = sorted({e for per in entry.values() for e in per})
        p.append("<h3>Where requests were processed (client region → entry region)</h3>")
        p.append(
            _table(
                ["client region", *entries],
                [[c, *[per.get(e, 0) for e in entries]] for c, per in entry.items()],
            )
        )
    # caches
    p.append('<h2 id="caches">Caches</h2>')
    p.append(
        _table(
            ["level", "hits", "misses", "hit ratio"],
            [
                [r["level"], r["hits"], r["misses"], _pct(r["hit_ratio"])]
                for r in _cache_rows(result)
            ],
        )
    )
    # cost
    p.append('<h2 id="cost">Cost per hour (USD)</h2>')
    fs = cost.get("full_scale") or cost
    p.append(
        _table(
            ["", "API servers", "hot nodes", "warm nodes", "total"],
            [
                [
                    "the spec's topology",
                    fs.get("api"),
                    fs.get("hot"),
                    fs.get("warm"),
                    fs.get("total"),
                ],
            ],
        )
    )
    # faults
    faults = result.get("faults") or []
    p.append('<h2 id="faults">Faults</h2>')
    if faults:
        p.append(
            _table(
                [
                    "kind",
                    "target",
                    "from s",
                    "until s",
                    "router sees it at s",
                    "router sees recovery at s",
                    "extra ms",
                ],
                [
                    [
                        f.get("kind"),
                        f.get("target"),
                        f.get("at_s"),
                        f.get("end_s"),
                        f.get("router_sees_at_s"),
                        f.get("router_sees_end_at_s"),
                        f.get("extra_ms"),
                    ]
                    for f in faults
                ],
                left=2,
            )
        )
    else:
        p.append("<p>No faults were injected.</p>")
    # nodes
    key, label = _load_key(result)
    ceiling = _ceiling(result)
    nodes = sorted(_node_rows(result), key=lambda r: (-(r[key] or 0.0), r["node"]))
    p.append('<h2 id="nodes">Busiest nodes</h2>')
    more = (
        f"the {min(15, len(nodes))} busiest of {len(nodes)}; all in <code>nodes.csv</code>"
        if len(nodes) > 15
        else "all nodes; also in <code>nodes.csv</code>"
    )
    p.append(
        f'<p class="muted">{more}; ranked by {_e(label)}. Red: above the load ceiling '
        f"({_e(_pct(ceiling, 0))}), which fails the verdict.</p>"
    )

    def _load_cell(v: Any, name: str) -> Any:
        if v is None:
            return ""
        return (_pct(v, 1), "bad" if name in failing and v > ceiling else "")

    p.append(
        _table(
            [
                "node",
                "kind",
                "workers",
                "requests",
                "utilisation",
                "offered load",
                "peak offered load",
                "peak phase",
                "max queue",
                "mean wait ms",
                "p99 wait ms",
            ],
            [
                [
                    r["node"],
                    r["kind"],
                    r["capacity"],
                    r["requests"],
                    _pct(r["utilisation"], 1),
                    _pct(r["offered_load"], 1),
                    _load_cell(r.get("peak_offered_load"), r["node"]),
                    r.get("peak_phase"),
                    r["max_queue"],
                    r["wait_ms"],
                    r.get("wait_p99_ms"),
                ]
                for r in nodes[:15]
            ],
            left=2,
        )
    )
    # assumptions
    p.append('<h2 id="assumptions">Assumptions (the model and the scale)</h2><ul>')
    p += [f"<li>{_e(a)}</li>" for a in result.get("assumptions") or []]
    p.append("</ul>")
    # plots
    p.append('<h2 id="plots">Plots</h2>')
    captions = {
        "latency_cdf.png": "Latency CDF per request type and client region",
        "timeseries.png": "p99, throughput, errors and hit ratio over time",
        "utilisation.png": "Node load in the busiest phase",
    }
    for fname in PLOTS:
        if fname in images:
            b64 = base64.b64encode(images[fname]).decode("ascii")
            p.append(
                f'<h3>{_e(captions[fname])}</h3><img id="{_e(fname)}" '
                f'alt="{_e(captions[fname])}" src="data:image/png;base64,{b64}">'
            )
    p.append(
        f'<p class="muted">{len(timeseries)} seconds in <code>timeseries.csv</code>; '
        "the whole result in <code>result.json</code>.</p>"
    )
    # machine (the only part that differs between identical runs)
    machine = {"machine": result.get("machine"), "versions": result.get("versions")}
    p.append(
        '<footer id="machine"><h2>Machine</h2><p class="muted">Where and how fast this '
        "run went; the only part of the report that changes between runs with the same "
        "spec and seed.</p>"
    )
    p.append(f"<pre>{_e(json.dumps(machine, indent=2, sort_keys=True))}</pre></footer>")
    p.append("</body></html>")
    return "\n".join(p) + "\n"


# --------------------------------------------------------------------------- entry point


def write_report(run_dir: Path, result: dict[str, Any], timeseries: list[dict[str, Any]]) -> None:
    """Write the CSV tables, the PNG plots and ``report.html`` into ``run_dir``.

    Files: ``requests.csv``, ``nodes.csv``, ``caches.csv``, ``latency_cdf.png``,
    ``timeseries.png``, ``utilisation.png`` and ``report.html`` (self-contained: the
    plots are embedded, nothing is fetched). Latency summaries without a ``"cdf"`` list
    (results written before it existed) get a coarse CDF through p50/p95/p99/p99.9, and
    the plot says so. Existing files are overwritten.

    Args:
        run_dir: the run directory (created if missing).
        result: the result object of :func:`geoshard.sim.run.simulate_spec`.
        timeseries: its per-second rows (``t_s``, ``requests``, ``errors``, ``p99_ms``,
            ``hit_ratio``, ``in_fault``).

    Examples:
        >>> write_report(Path("runs/local-1"), result, ts)  # doctest: +SKIP
    """
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    _write_csv(d / "requests.csv", REQUEST_FIELDS, _request_rows(result))
    _write_csv(d / "nodes.csv", NODE_FIELDS, _node_rows(result))
    _write_csv(d / "caches.csv", CACHE_FIELDS, _cache_rows(result))
    images = _render_plots(result, timeseries)
    for fname, data in images.items():
        (d / fname).write_bytes(data)
    (d / "report.html").write_text(_html(result, timeseries, images), encoding="utf-8")
