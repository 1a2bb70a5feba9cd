"""A light client that times an API's answers while another client loads it.

Locust at ~1,500 requests/s saturates its own CPU on this machine, so its latencies
include its own queueing: a bare FastAPI endpoint that refuses every request at once
showed a refusal P99 of 7-17 ms through it, against 3-4 ms through this probe. The
probe sends one request at a time on one kept-alive connection, ``--rate`` per second
on a fixed schedule, at a raised priority where allowed (``nice -5``), drawn from the
same request mix as the load (feature reads, recommends, interaction writes of
uniformly drawn users), and times each answer with ``perf_counter``: what it sees is
the server's answer time plus a loopback round trip. ``bench_overload.py`` runs it next
to the load (wrk or Locust), against our API and against the bare reference alike.

Prints one JSON object: ``nice`` (the priority it ran at); ``types``: per request
type, per status (``"200"``, ``"503"``, an exception's name) the count and the
P50 / P90 / P99 / max in ms; ``refused``: the same over every 429 and 503; ``admitted``:
per type, over every other answer below 500.

Usage::

    python benchmarks/latency_probe.py PORT --duration S [--delay S] [--rate R]
        [--token T] [--jurisdiction J] [--users N] [--items N] [--k K]
        [--mix feature_read=0.5,recommend=0.3,interaction_write=0.2] [--seed N]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import time
from dataclasses import dataclass

#: The request types the probe can send.
TYPES = ("feature_read", "recommend", "interaction_write")


@dataclass(frozen=True)
class Workload:
    """What the probe asks: the request mix and who for."""

    mix: dict[str, float]
    jurisdiction: str = "eu"
    users: int = 300
    items: int = 1000
    k: int = 20

    def request(
        self, rng: random.Random, user_index: int | None = None
    ) -> tuple[str, str, str, bytes | None]:
        """``(type, method, path, body)`` of one request drawn from the mix, for user
        ``user_index`` (default: drawn uniformly from ``users``).

        Examples:
            >>> w = Workload({"recommend": 1.0}, users=1)
            >>> w.request(random.Random(0))
            ('recommend', 'GET', '/v1/recommend/eu:0?k=20', None)
        """
        kinds = list(self.mix)
        op = rng.choices(kinds, weights=[self.mix[t] for t in kinds])[0]
        index = rng.randrange(self.users) if user_index is None else user_index
        user = f"{self.jurisdiction}:{index}"
        if op == "feature_read":
            return op, "GET", f"/v1/users/{user}/features", None
        if op == "recommend":
            return op, "GET", f"/v1/recommend/{user}?k={self.k}", None
        if op == "interaction_write":
            item = f"sku-{rng.randrange(self.items):07d}"
            ev = {"user_id": user, "item_id": item, "type": "click"}
            return op, "POST", "/v1/interactions", json.dumps({"interactions": [ev]}).encode()
        raise ValueError(f"unknown request type {op!r} in the mix")


def parse_mix(text: str) -> dict[str, float]:
    """``"a=0.5,b=0.5"`` -> ``{"a": 0.5, "b": 0.5}``.

    Examples:
        >>> parse_mix("feature_read=0.7,recommend=0.3")
        {'feature_read': 0.7, 'recommend': 0.3}
    """
    out: dict[str, float] = {}
    for part in text.split(","):
        name, _, share = part.partition("=")
        try:
            out[name.strip()] = float(share)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not type=share (for example feature_read=0.5)"
            ) from None
    return out


def _quantile(sorted_ms: list[float], q: float) -> float:
    return round(sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))], 2)


def summarize(latencies: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Count and P50 / P90 / P99 / max (ms) per status.

    Examples:
        >>> summarize({"503": [3.0, 1.0, 2.0]})["503"]
        {'count': 3, 'p50_ms': 2.0, 'p90_ms': 3.0, 'p99_ms': 3.0, 'max_ms': 3.0}
    """
    out: dict[str, dict[str, float]] = {}
    for status, values in sorted(latencies.items()):
        v = sorted(values)
        out[status] = {
            "count": len(v),
            "p50_ms": _quantile(v, 0.5),
            "p90_ms": _quantile(v, 0.9),
            "p99_ms": _quantile(v, 0.99),
            "max_ms": round(v[-1], 2),
        }
    return out


#: Statuses of a refusal for load.
REFUSALS = ("429", "503")


def report(raw: dict[str, dict[str, list[float]]]) -> dict[str, object]:
    """The probe's result: ``types`` (per type and status), ``refused`` (every 429 and
    503 pooled; ``None`` without any) and ``admitted`` (per type, every answer below 500
    that is not a refusal: a 404 for a user without features is an answer).

    Examples:
        >>> r = report({"recommend": {"200": [2.0, 4.0], "503": [1.0]}})
        >>> r["refused"]["count"], r["admitted"]["recommend"]["p50_ms"]
        (1, 4.0)
    """
    refused = [v for per in raw.values() for st, vs in per.items() if st in REFUSALS for v in vs]
    admitted = {
        op: [
            v
            for st, vs in per.items()
            if st.isdigit() and int(st) < 500
            for v in vs
            if st not in REFUSALS
        ]
        for op, per in raw.items()
    }
    return {
        "types": {op: summarize(per) for op, per in sorted(raw.items())},
        "refused": summarize({"all": refused})["all"] if refused else None,
        "admitted": {op: summarize({"all": v})["all"] for op, v in sorted(admitted.items()) if v},
    }


def probe(
    port: int, duration_s: float, rate: float, work: Workload, token: str | None, seed: int
) -> dict[str, dict[str, list[float]]]:
    """Latencies (ms) per request type and status of ``rate`` requests per second for
    ``duration_s``."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5.0)
    out: dict[str, dict[str, list[float]]] = {}
    t_end = time.monotonic() + duration_s
    due = time.monotonic()
    while time.monotonic() < t_end:
        due += 1.0 / rate
        op, method, path, body = work.request(rng)
        t0 = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            status = str(resp.status)
            if resp.will_close:
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            status = type(exc).__name__
            conn.close()
        out.setdefault(op, {}).setdefault(status, []).append((time.perf_counter() - t0) * 1e3)
        time.sleep(max(0.0, due - time.monotonic()))
    conn.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("port", type=int, help="the server's loopback port")
    p.add_argument("--duration", type=float, required=True, help="seconds to probe")
    p.add_argument("--delay", type=float, default=0.0, help="seconds to wait first")
    p.add_argument("--rate", type=float, default=150.0, help="requests per second")
    p.add_argument("--token", help="bearer token")
    p.add_argument("--jurisdiction", default="eu", help="the users' jurisdiction")
    p.add_argument("--users", type=int, default=300, help="users drawn uniformly")
    p.add_argument("--items", type=int, default=1000, help="items for the writes")
    p.add_argument("--k", type=int, default=20, help="recommendations asked")
    p.add_argument(
        "--mix",
        type=parse_mix,
        default={"feature_read": 0.5, "recommend": 0.3, "interaction_write": 0.2},
        help="request mix, type=share,...",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    unknown = sorted(set(args.mix) - set(TYPES))
    if unknown or not args.mix or min(args.mix.values()) < 0 or sum(args.mix.values()) <= 0:
        p.error(
            f"--mix: {', '.join(unknown) or 'the shares'} invalid; use type=share,... with "
            f"types among {', '.join(TYPES)} and shares >= 0, not all 0"
        )
    if args.rate <= 0 or args.duration <= 0 or args.users < 1 or args.items < 1:
        p.error("--rate and --duration must be > 0, --users and --items >= 1")
    work = Workload(args.mix, args.jurisdiction, args.users, args.items, args.k)
    nice = 0
    with contextlib.suppress(OSError):  # raising the priority needs privileges
        os.setpriority(os.PRIO_PROCESS, 0, -5)
    with contextlib.suppress(OSError):
        nice = os.getpriority(os.PRIO_PROCESS, 0)
    time.sleep(args.delay)
    raw = probe(args.port, args.duration, args.rate, work, args.token, args.seed)
    print(json.dumps({"nice": nice, **report(raw)}, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
