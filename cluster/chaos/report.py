"""The run directory of a chaos run.

``result.json`` (schema version, scenario, seed, spec, machine and commit, metrics,
verdict), ``timeline.csv`` (one row per second), ``ledger.csv`` (every write and its
outcome), ``timeline.png`` (throughput, errors and P99 per second, the fault window
shaded; matplotlib, Agg) and ``report.html`` (self-contained: the plot inlined).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geoshard.cluster.chaos.ledger import Write

__all__ = ["plot_timeline", "write_run"]


def plot_timeline(rows: Sequence[dict[str, Any]], fault_at_s: float, heal_at_s: float) -> bytes:
    """The timeline plot as PNG bytes: answered and failed requests per second (top),
    P99 of the answered (bottom), the fault window shaded."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5), dpi=100)
    top, bottom = fig.subplots(2, 1, sharex=True)
    t = [r["t_s"] for r in rows]
    top.plot(t, [r["ok_per_s"] for r in rows], label="answered 2xx /s", color="tab:blue")
    top.plot(t, [r["errors_per_s"] for r in rows], label="failed /s", color="tab:red")
    top.set_ylabel("requests / s")
    top.legend(loc="upper right", fontsize=8)
    bottom.plot(
        t,
        [r["p99_ms"] if r["p99_ms"] is not None else float("nan") for r in rows],
        color="tab:purple",
        label="P99 of answered",
    )
    bottom.set_ylabel("P99 (ms)")
    bottom.set_xlabel("seconds since the run started")
    bottom.set_yscale("log")
    for ax in (top, bottom):
        ax.axvspan(fault_at_s, heal_at_s, color="tab:orange", alpha=0.2, label="fault")
        ax.grid(alpha=0.3)
    bottom.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_run(
    run_dir: Path, result: dict[str, Any], rows: Sequence[dict[str, Any]], writes: Sequence[Write]
) -> None:
    """Write the run directory (created with its parents)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    fields = ["t_s", "ok_per_s", "errors_per_s", "availability", "p99_ms"]
    with open(run_dir / "timeline.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    with open(run_dir / "ledger.csv", "w", newline="") as f:
        cw = csv.writer(f)
        cw.writerow(["op_id", "kind", "key", "token", "outcome", "region", "t_invoke_s", "detail"])
        for x in writes:
            cw.writerow(
                [
                    x.op_id,
                    x.kind,
                    x.key,
                    x.token,
                    x.outcome,
                    x.region,
                    f"{x.t_invoke_s:.3f}",
                    x.detail,
                ]
            )
    png = plot_timeline(rows, result["fault"]["at_s"], result["fault"]["healed_at_s"])
    (run_dir / "timeline.png").write_bytes(png)
    (run_dir / "report.html").write_text(_html(result, png))


def _html(result: dict[str, Any], png: bytes) -> str:
    m = result["metrics"]
    v = result["verdict"]
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(json.dumps(val))}</td></tr>"
        for k, val in sorted(m.items())
        if not isinstance(val, (dict, list))
    )
    phases = "".join(
        f"<tr><td>{p}</td><td>{s['requests']}</td><td>{s['availability']}</td>"
        f"<td>{s['p50_ms']}</td><td>{s['p99_ms']}</td></tr>"
        for p, s in m["phases"].items()
    )
    lost = "".join(f"<li>{html.escape(str(x))}</li>" for x in m["lost_writes"][:50])
    viol = "".join(f"<li>{html.escape(x)}</li>" for x in m["residency_examples"][:50])
    img = base64.b64encode(png).decode()
    verdict = "PASSED" if v["passed"] else "FAILED: " + "; ".join(v["failures"])
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>geoshard chaos {html.escape(result["scenario"])}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td{{padding:2px 8px}}
table{{border-collapse:collapse}}tr:nth-child(odd){{background:#f4f4f4}}</style></head><body>
<h1>chaos: {html.escape(result["scenario"])} (seed {result["seed"]})</h1>
<p><b>{html.escape(verdict)}</b></p>
<p>fault: {html.escape(json.dumps(result["fault"]))}</p>
<img alt="timeline" src="data:image/png;base64,{img}">
<h2>Phases</h2><table><tr><th>phase</th><th>requests</th><th>availability</th>
<th>P50 ms</th><th>P99 ms</th></tr>{phases}</table>
<h2>Metrics</h2><table>{rows}</table>
<h2>Lost acknowledged writes</h2><ul>{lost or "<li>none</li>"}</ul>
<h2>Residency violations</h2><ul>{viol or "<li>none</li>"}</ul>
</body></html>
"""
