"""The artefacts of ``geoshard plan``: the planned spec, its diff, tables, a plot, a page.

:func:`write_plan` writes into the plan directory:

- ``plan.json``: the whole plan (:func:`geoshard.sim.planner.plan`) plus ``machine``;
- ``<spec>.plan.yaml``: the chosen topology as a spec (the input's text with only the
  planned values changed, see :mod:`geoshard.sim.specedit`) and ``<spec>.plan.diff``;
- ``candidates.csv``: every screened candidate; ``pools.csv``: the answer per region and
  pool;
- ``pareto.png``: cost per hour against the worst predicted P99 / target, every
  candidate, the Pareto front and the choice;
- ``report.html``: one self-contained page (inline CSS, the plot as a data URI, no
  scripts) that opens offline.

Everything except ``machine`` (and the timings it holds) is a pure function of the plan.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import platform
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from geoshard.spec import Spec

from .analytic import RegionSizing, Sizing
from .specedit import diff, planned_text

__all__ = ["CANDIDATE_FIELDS", "POOL_FIELDS", "chosen_spec", "write_plan"]

CANDIDATE_FIELDS = (
    "index",
    "caches",
    "headroom",
    "feasible",
    "cost_total",
    "cost_api",
    "cost_hot",
    "cost_warm",
    "cost_caches",
    "worst_p99_ratio",
    "worst_row",
    "points",
    "why_not",
)
POOL_FIELDS = (
    "region",
    "pool",
    "input_nodes",
    "nodes",
    "workers",
    "peak_load",
    "peak_scenario",
    "busiest",
    "margin",
    "p_wait",
    "wait_p99_ms",
    "cost_per_hour",
)


def chosen_spec(spec: Spec, plan: dict[str, Any]) -> Spec | None:
    """The chosen topology as a spec (None when there is no plan)."""
    ch = plan.get("chosen")
    if not ch:
        return None
    regs = tuple((r, RegionSizing(**s)) for r, s in ch["sizing"]["regions"].items())
    caches = tuple(ch["sizing"]["caches"].items())
    return Sizing(regs, caches).apply(spec)


def _write_csv(path: Path, fields: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(fields), lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _candidate_rows(plan: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for c in plan["candidates"]:
        rows.append(
            {
                "index": c["index"],
                "caches": ";".join(f"{k}={v:g}" for k, v in c["caches"].items()),
                "headroom": c["headroom"],
                "feasible": c["feasible"],
                "cost_total": c["cost"]["total"],
                "cost_api": c["cost"]["api"],
                "cost_hot": c["cost"]["hot"],
                "cost_warm": c["cost"]["warm"],
                "cost_caches": c["cost"]["caches"],
                "worst_p99_ratio": round(c["worst_p99_ratio"], 6),
                "worst_row": c["worst_row"],
                "points": c["points"],
                "why_not": c["violations"][0] if c["violations"] else "",
            }
        )
    return rows


def _pareto_png(plan: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    cands = {c["index"]: c for c in plan["candidates"]}
    feas = [c for c in cands.values() if c["feasible"]]
    bad = [c for c in cands.values() if not c["feasible"] and math.isfinite(c["worst_p99_ratio"])]
    if bad:
        ax.scatter(
            [c["cost"]["total"] for c in bad],
            [c["worst_p99_ratio"] for c in bad],
            marker="x",
            color="#bbbbbb",
            label="misses a constraint",
        )
    if feas:
        ax.scatter(
            [c["cost"]["total"] for c in feas],
            [c["worst_p99_ratio"] for c in feas],
            color="#1f77b4",
            s=18,
            label="meets every constraint (model)",
        )
    front = [cands[i] for i in plan["pareto"]]
    if front:
        ax.plot(
            [c["cost"]["total"] for c in front],
            [c["worst_p99_ratio"] for c in front],
            color="#d62728",
            marker="o",
            ms=4,
            label="Pareto front",
        )
    ch = plan.get("chosen")
    if ch:
        c = cands[ch["index"]]
        ax.scatter(
            [c["cost"]["total"]],
            [c["worst_p99_ratio"]],
            marker="*",
            s=220,
            color="#2ca02c",
            zorder=5,
            label="chosen" + (" (confirmed)" if ch["confirmed"] else " (model only)"),
        )
    ax.axhline(1.0, color="#444444", lw=0.8, ls="--")
    ax.set_xlabel("cost per hour, USD")
    ax.set_ylabel("worst predicted P99 / target")
    ax.set_title(f"{plan['spec_name']}: {len(cands)} candidates screened")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    else:  # every candidate overloads some pool: no finite P99 to plot
        ax.text(0.5, 0.5, "no candidate with a finite P99", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _e(x: Any) -> str:
    return html.escape(str(x))


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(x: Any, digits: int = 4) -> str:
    if isinstance(x, float):
        if not math.isfinite(x):
            return "inf"
        return f"{x:.{digits}g}"
    return str(x)


def _html(plan: dict[str, Any], png: bytes, diff_text: str, plan_file: str) -> str:
    ch = plan.get("chosen")
    css = (
        "body{font:14px/1.45 system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}"
        "table{border-collapse:collapse;margin:8px 0 18px}td,th{border:1px solid #ccc;"
        "padding:3px 7px;text-align:right}th{background:#f3f3f3}td:first-child,"
        "th:first-child{text-align:left}.ok{background:#e7f6e7;border:1px solid #7c7;"
        "padding:10px}.bad{background:#fbe9e9;border:1px solid #d77;padding:10px}"
        "pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}"
    )
    parts = [
        (
            f"<!doctype html><html><head><meta charset='utf-8'><title>plan: "
            f"{_e(plan['spec_name'])}</title><style>{css}</style></head><body>"
        ),
        f"<h1>geoshard plan: {_e(plan['spec_name'])}</h1>",
        (
            f"<p>search <code>{_e(plan['search'])}</code> over {len(plan['regions'])} "
            f"region(s): {plan['space_size']:.3g} candidates in the space; "
            f"{len(plan['candidates'])} screened (cache combination x headroom level); "
            f"scenarios: {_e(', '.join(plan['scenarios']))}</p>"
        ),
    ]
    if ch:
        cost = ch["cost"]
        state = (
            "confirmed by the simulator" if ch["confirmed"] else "from the model only (--confirm 0)"
        )
        parts.append(
            f"<div class='ok'><b>PLAN</b> {state}: ${cost['total']:,.2f}/hour "
            f"(API ${cost['api']:,.2f}, hot ${cost['hot']:,.2f}, warm "
            f"${cost['warm']:,.2f}, caches ${cost['caches']:,.2f}); written to "
            f"<code>{_e(plan_file)}</code></div>"
        )
        parts.append("<h2>Per region and pool</h2>")
        parts.append(
            _table(
                [
                    "region",
                    "pool",
                    "input",
                    "plan",
                    "workers",
                    "peak load",
                    "in scenario",
                    "sampling margin",
                    "P99 wait ms",
                    "$/hour",
                ],
                [
                    [
                        p["region"],
                        p["pool"],
                        p["input_nodes"],
                        p["nodes"],
                        p["workers"],
                        f"{p['peak_load']:.1%}",
                        p["peak_scenario"],
                        f"{p['margin']:.1%}",
                        _fmt(p["wait_p99_ms"]),
                        f"{p['cost_per_hour']:,.2f}",
                    ]
                    for p in ch["pools"]
                ],
            )
        )
        parts.append("<h2>Predicted latency (worst scenario per row)</h2>")
        parts.append(
            _table(
                ["type", "client", "entry", "scenario", "P50 ms", "P99 ms", "target P99", "within"],
                [
                    [
                        r["type"],
                        r["client"],
                        r["entry"],
                        r["scenario"],
                        _fmt(r["p50_ms"]),
                        _fmt(r["p99_ms"]),
                        r["target_p99_ms"],
                        f"{r['attainment']:.2%}",
                    ]
                    for r in ch["latency"]
                ],
            )
        )
        parts.append("<p>binding: " + _e("; ".join(ch["binding"])) + "</p>")
    else:
        parts.append(
            "<div class='bad'><b>NO PLAN</b> nothing in the search space meets "
            "every constraint:<ul>"
            + "".join(f"<li>{_e(r)}</li>" for r in plan["no_plan_reasons"])
            + "</ul></div>"
        )
    if plan["confirmation"]:
        parts.append("<h2>Confirmation by the simulator</h2>")
        rows = []
        for cf in plan["confirmation"]:
            for sc, s in cf["summary"].items():
                rows.append(
                    [
                        cf["index"],
                        f"{cf['cost']['total']:,.2f}",
                        sc,
                        f"{s['passed']}/{s['runs']}",
                        f"{s['worst_p99_ratio']:.3f} ± {s['worst_p99_ratio_ci95']:.3f}",
                        s["worst_row"],
                        f"{s['peak_load']:.1%} ± {s['peak_load_ci95']:.1%}",
                        s["peak_pool"],
                        "; ".join(s["failures"][:2]),
                    ]
                )
        parts.append(
            _table(
                [
                    "candidate",
                    "$/hour",
                    "scenario",
                    "passed",
                    "worst P99/target (95 % CI)",
                    "row",
                    "peak load (95 % CI)",
                    "pool",
                    "failures",
                ],
                rows,
            )
        )
    below = plan.get("one_below") or []
    if below:
        parts.append(
            "<h2>One node fewer</h2><p>Every API and warm pool that might do with one "
            "node fewer was simulated so in its busiest scenario: a failing run shows "
            "the count is needed (rerun it with the command shown).</p>"
        )
        parts.append(
            _table(
                ["pool", "plan", "one fewer", "scenario", "result", "rerun"],
                [
                    [
                        b["pool"],
                        b["nodes"],
                        b["one_below"],
                        b["scenario"],
                        b["failure"],
                        b.get("command", ""),
                    ]
                    for b in below
                ],
            )
        )
    cmds = plan.get("commands") or []
    if cmds:
        parts.append(
            "<h2>Reproduce with geoshard simulate</h2><pre>" + _e("\n".join(cmds)) + "</pre>"
        )
    parts.append("<h2>Cost against latency</h2>")
    parts.append(
        f"<img alt='Pareto front' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
    )
    if plan["scenario_notes"]:
        parts.append(
            "<h2>Scenario notes</h2><ul>"
            + "".join(f"<li>{_e(n)}</li>" for n in plan["scenario_notes"])
            + "</ul>"
        )
    if diff_text:
        parts.append(f"<h2>Diff against the input</h2><pre>{_e(diff_text)}</pre>")
    m = plan.get("machine", {})
    parts.append(
        f"<p style='color:#777'>machine: {_e(m.get('hostname', ''))}, "
        f"{_e(m.get('cpu_count', ''))} CPUs, executor "
        f"{_e(plan['executor']['executor'])}; timing {_e(plan['timing'])}</p>"
    )
    parts.append("</body></html>\n")
    return "".join(parts)


def write_plan(
    out_dir: Path, plan: dict[str, Any], spec: Spec, input_path: Path, input_text: str
) -> dict[str, Path]:
    """Write the plan directory; returns the paths written by role."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    plan["machine"] = {
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "wall_s": plan["timing"]["total_s"],
    }
    new = chosen_spec(spec, plan)
    diff_text = ""
    plan_file = ""
    if new is not None:
        text, in_place = planned_text(input_text, spec, new, str(input_path))
        plan_file = f"{spec.name}.plan.yaml"
        p = out_dir / plan_file
        p.write_text(text, encoding="utf-8")
        paths["spec"] = p
        diff_text = diff(input_text, text, str(input_path), plan_file)
        d = out_dir / f"{spec.name}.plan.diff"
        d.write_text(diff_text, encoding="utf-8")
        paths["diff"] = d
        plan["chosen"]["spec_file"] = plan_file
        plan["chosen"]["in_place"] = in_place
        _write_csv(out_dir / "pools.csv", POOL_FIELDS, plan["chosen"]["pools"])
        paths["pools"] = out_dir / "pools.csv"
        plan["commands"] = _write_scenarios(out_dir, spec, new, plan, plan_file)
    _write_csv(out_dir / "candidates.csv", CANDIDATE_FIELDS, _candidate_rows(plan))
    paths["candidates"] = out_dir / "candidates.csv"
    png = _pareto_png(plan)
    (out_dir / "pareto.png").write_bytes(png)
    paths["pareto"] = out_dir / "pareto.png"
    (out_dir / "plan.json").write_text(
        json.dumps(plan, indent=2, sort_keys=True, default=_json_default) + "\n", encoding="utf-8"
    )
    paths["plan"] = out_dir / "plan.json"
    (out_dir / "report.html").write_text(_html(plan, png, diff_text, plan_file), encoding="utf-8")
    paths["report"] = out_dir / "report.html"
    return paths


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-")


def _write_scenarios(
    out_dir: Path, spec: Spec, new: Spec, plan: dict[str, Any], plan_file: str
) -> list[str]:
    """The chosen topology in every scenario, and each one-node-fewer run that failed, as
    specs ``geoshard simulate`` runs as they are; returns the commands."""
    from .scenarios import Scenario, scenario_spec

    st = plan["settings"]
    flags = f"--scale {st['scale']:g} --duration {st['duration_s']:g}"
    crashed = plan["chosen"].get("crashed", {})
    scen = {
        d["name"]: Scenario(
            d["name"],
            d["kind"],
            frozenset(d["down_regions"]),
            tuple(tuple(m) for m in d["multipliers"]),
            d["minus_one"],
        )
        for d in plan["scenario_objects"]
    }
    cmds = [
        f"geoshard simulate {out_dir / plan_file} {flags} --seed {st['seed']}   # the planned spec as written"
    ]
    sdir = out_dir / "scenarios"
    sdir.mkdir(exist_ok=True)
    for name, sc in scen.items():
        f = sdir / f"{_slug(name)}.yaml"
        _dump(f, scenario_spec(new, sc, st["duration_s"], crashed if sc.minus_one else {}))
        claim = (
            "passes" if plan["chosen"]["confirmed"] else "not simulated by the plan (--confirm 0)"
        )
        cmds.append(f"geoshard simulate {f} {flags} --seed {st['seed']}   # {name}: {claim}")
    failed = [b for b in plan.get("one_below") or [] if b["failed"]]
    if failed:
        bdir = out_dir / "one-below"
        bdir.mkdir(exist_ok=True)
        for b in failed:
            region, kind = b["pool"].split("/")
            data = new.model_dump(mode="json")
            if kind == "api":
                data["regions"][region]["api"]["servers"] -= 1
            else:
                data["regions"][region]["warm"]["nodes"] -= 1
            smaller = Spec.model_validate(data)
            sc = scen[b["scenario"]]
            f = bdir / f"{_slug(b['pool'])}.yaml"
            _dump(f, scenario_spec(smaller, sc, st["duration_s"], crashed if sc.minus_one else {}))
            b["command"] = f"geoshard simulate {f} {flags} --seed {b['seed']}"
            cmds.append(b["command"] + f"   # {b['pool']} one fewer in {b['scenario']}: fails")
    del spec
    return cmds


def _dump(path: Path, spec: Spec) -> None:
    import yaml

    path.write_text(
        yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False, width=100),
        encoding="utf-8",
    )


def _json_default(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, (set, frozenset, tuple)):
        return list(x)
    return str(x)
