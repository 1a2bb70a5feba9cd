"""The spec summary that ``geoshard validate`` prints: regions, nodes, capacity, residency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from geoshard.regions.network import NetworkModel
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import PERSONAL_CLASSES, Spec, load_spec

__all__ = ["render_summary", "summarize"]


def summarize(path: str | Path) -> dict[str, Any]:
    """Load ``path`` and return its summary as plain data (what ``--json`` prints)."""
    spec = load_spec(path)
    return summarize_spec(spec, str(path))


def summarize_spec(spec: Spec, source: str = "<spec>") -> dict[str, Any]:
    """The summary of an already-loaded spec."""
    policy = ResidencyPolicy.from_spec(spec)
    net = NetworkModel.from_spec(spec)
    regions: list[dict[str, Any]] = []
    for name, r in spec.regions.items():
        regions.append(
            {
                "region": name,
                "cloud_region": r.cloud_region,
                "jurisdiction": r.jurisdiction,
                "api_servers": r.api.servers,
                "api_workers": r.api.servers * r.api.workers,
                "hot_primaries": r.hot.nodes,
                "hot_replicas": r.hot.nodes * r.hot.replicas,
                "hot_memory_gb": round(r.hot.nodes * r.hot.memory_gb, 3),
                "warm_nodes": r.warm.nodes,
                "cold_store": r.cold.store,
                "peak_qps": spec.workload.peak_qps.get(name, 0.0),
            }
        )
    residency = []
    for j in spec.jurisdictions:
        for d in policy.explain(j):
            if d.personal:
                residency.append(
                    {
                        "jurisdiction": j,
                        "data_class": d.data_class,
                        "store_in": list(d.store_in),
                        "process_in": list(d.process_in),
                        "source": d.source,
                    }
                )
    names = list(spec.regions)
    return {
        "spec": source,
        "name": spec.name,
        "jurisdictions": {j: spec.jurisdiction_regions(j) for j in spec.jurisdictions},
        "regions": regions,
        "totals": {
            "regions": len(spec.regions),
            "jurisdictions": len(spec.jurisdictions),
            "hot_nodes": sum(x["hot_primaries"] + x["hot_replicas"] for x in regions),
            "hot_memory_gb": round(sum(x["hot_memory_gb"] for x in regions), 3),
            "warm_nodes": sum(x["warm_nodes"] for x in regions),
            "api_servers": sum(x["api_servers"] for x in regions),
            "peak_qps": spec.total_peak_qps(),
            "users": spec.workload.users,
            "items": spec.workload.items,
        },
        "shards": {
            "user_ring_nodes": len(spec.hot_nodes()),
            "replication": spec.shards.users.replication,
            "bounded_load_eps": spec.shards.users.bounded_load_eps,
            "item_attribute": spec.shards.items.attribute,
            "item_shards": sorted(
                set(spec.shards.items.shards.values()) | {spec.shards.items.default_shard}
            ),
        },
        "residency": residency,
        "rtt_ms": {a: {b: round(net.rtt_ms(a, b), 1) for b in names} for a in names},
    }


def render_summary(summary: dict[str, Any], console: Console) -> None:
    """Print a summary as tables."""
    t = summary["totals"]
    console.print(
        f"[bold]{summary['name']}[/] ({summary['spec']}): {t['regions']} regions in "
        f"{t['jurisdictions']} jurisdictions, {t['users']:,} users, {t['items']:,} items, "
        f"{t['peak_qps']:,.0f} peak QPS"
    )
    rt = Table(
        "region",
        "cloud",
        "jurisdiction",
        "API servers",
        "hot primaries+replicas",
        "hot GiB",
        "warm nodes",
        "cold",
        "peak QPS",
        title="regions",
    )
    for r in summary["regions"]:
        rt.add_row(
            r["region"],
            r["cloud_region"],
            r["jurisdiction"],
            str(r["api_servers"]),
            f"{r['hot_primaries']}+{r['hot_replicas']}",
            f"{r['hot_memory_gb']:g}",
            str(r["warm_nodes"]),
            r["cold_store"],
            f"{r['peak_qps']:,.0f}",
        )
    rt.add_row(
        "total",
        "",
        "",
        str(t["api_servers"]),
        str(t["hot_nodes"]),
        f"{t['hot_memory_gb']:g}",
        str(t["warm_nodes"]),
        "",
        f"{t['peak_qps']:,.0f}",
        style="bold",
    )
    console.print(rt)
    # residency: collapse classes that share the same regions
    rows: dict[tuple[str, tuple[str, ...], tuple[str, ...], str], list[str]] = {}
    for r in summary["residency"]:
        k = (r["jurisdiction"], tuple(r["store_in"]), tuple(r["process_in"]), r["source"])
        rows.setdefault(k, []).append(r["data_class"])
    res = Table(
        "jurisdiction",
        "personal data classes",
        "stored in",
        "processed in",
        "why",
        title="residency map (non-personal data: any region)",
    )
    for (j, store, proc, src), classes in rows.items():
        shown = "all personal" if len(classes) == len(PERSONAL_CLASSES) else ", ".join(classes)
        res.add_row(j, shown, ", ".join(store), ", ".join(proc), src)
    console.print(res)
    s = summary["shards"]
    console.print(
        f"user ring: {s['user_ring_nodes']} hot nodes, replication {s['replication']}, "
        f"bounded-load eps {s['bounded_load_eps']}; item shards by "
        f"'{s['item_attribute']}': {', '.join(s['item_shards'])}"
    )
