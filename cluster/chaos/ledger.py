"""The acknowledged-write ledger of a chaos run and the set checker over it.

Every write the load generator sends is a unique key with a unique value (a *token*),
so what a tier holds after the run can be compared with what was acknowledged, as in
Jepsen's ``set`` workload (reliability-anchors §1.5):

* ``ok``: the API acknowledged the write (2xx); it must be found afterwards;
* ``fail``: the API refused it explicitly (a 4xx, or no API took the connection), so
  nothing was written; it must *not* be found;
* ``info``: indeterminate (a timeout, a dropped connection, a 5xx after the request
  was sent): it may or may not be found.

:func:`check_set` then gives ``lost = ok - found`` (the invariant: empty),
``unexpected = found - attempted`` and found values of ``fail`` writes (also empty),
and ``recovered = info & found``. Pure: no I/O, no clock.

Examples:
    >>> ledger = Ledger()
    >>> op = ledger.invoke("feature", "user_features:eu:9", "t-1", t_s=0.5)
    >>> ledger.complete(op, "ok", region="eu-west", t_s=0.6)
    >>> report = check_set(ledger.writes(), {"user_features:eu:9": {"t-1"}})
    >>> report.lost, report.ok
    ([], 1)
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Ledger", "Outcome", "SetReport", "Write", "check_set"]

Outcome = Literal["pending", "ok", "fail", "info"]


@dataclass
class Write:
    """One write of the run.

    Attributes:
        op_id: its index in the ledger.
        kind: ``feature`` (hot tier) or ``interaction`` (stream, then Parquet).
        key: the datum's key text (``user_features:eu:9``, ``interactions:eu:9``).
        token: the unique value written.
        outcome: ``ok``, ``fail``, ``info`` (or ``pending`` while in flight).
        region: the region that acknowledged it ('' unless ``ok``).
        t_invoke_s: when it was sent, seconds since the run started.
        t_complete_s: when the answer came (or the attempt ended).
        detail: the status or error, for the report.
    """

    op_id: int
    kind: str
    key: str
    token: str
    outcome: Outcome = "pending"
    region: str = ""
    t_invoke_s: float = 0.0
    t_complete_s: float = 0.0
    detail: str = ""


class Ledger:
    """Thread-safe history of every write the load generator sends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writes: list[Write] = []

    def invoke(self, kind: str, key: str, token: str, *, t_s: float) -> int:
        """Record a write about to be sent; returns its op id."""
        with self._lock:
            op_id = len(self._writes)
            self._writes.append(Write(op_id, kind, key, token, t_invoke_s=t_s))
            return op_id

    def complete(
        self, op_id: int, outcome: Outcome, *, region: str = "", t_s: float, detail: str = ""
    ) -> None:
        """Record how write ``op_id`` ended.

        Raises:
            ValueError: ``outcome`` is ``pending``, or ``ok`` without the region.
        """
        if outcome == "pending":
            raise ValueError("a write completes as ok, fail or info, not pending")
        if outcome == "ok" and not region:
            raise ValueError(f"write {op_id} acknowledged without the region that took it")
        with self._lock:
            w = self._writes[op_id]
            w.outcome, w.region, w.t_complete_s, w.detail = outcome, region, t_s, detail

    def writes(self) -> list[Write]:
        """A snapshot of every write so far (pending ones count as indeterminate)."""
        with self._lock:
            return [Write(**vars(w)) for w in self._writes]


@dataclass
class SetReport:
    """What :func:`check_set` found.

    Attributes:
        attempted: writes sent.
        ok: acknowledged writes.
        failed: writes refused.
        indeterminate: writes whose fate the client could not know (``info``, pending).
        lost: acknowledged writes not found (key, token, region that acknowledged).
        unexpected: values found that no write of the run sent (key, value).
        resurrected: values of refused writes that were found (key, token).
        recovered: indeterminate writes that were found.
    """

    attempted: int = 0
    ok: int = 0
    failed: int = 0
    indeterminate: int = 0
    lost: list[tuple[str, str, str]] = field(default_factory=list)
    unexpected: list[tuple[str, str]] = field(default_factory=list)
    resurrected: list[tuple[str, str]] = field(default_factory=list)
    recovered: int = 0

    @property
    def passed(self) -> bool:
        """True when nothing acknowledged was lost and nothing appeared unwritten."""
        return not (self.lost or self.unexpected or self.resurrected)


def check_set(writes: Iterable[Write], found: Mapping[str, set[str]]) -> SetReport:
    """Compare the ledger with what the tiers hold.

    Args:
        writes: the ledger's writes.
        found: for each key of the run, the tokens found for it where the write must
            be (keys outside the run are the caller's to leave out).

    Returns:
        The report; ``passed`` is the invariant.
    """
    rep = SetReport()
    sent: dict[str, set[str]] = {}
    for w in writes:
        rep.attempted += 1
        sent.setdefault(w.key, set()).add(w.token)
        seen = w.token in found.get(w.key, ())
        if w.outcome == "ok":
            rep.ok += 1
            if not seen:
                rep.lost.append((w.key, w.token, w.region))
        elif w.outcome == "fail":
            rep.failed += 1
            if seen:
                rep.resurrected.append((w.key, w.token))
        else:
            rep.indeterminate += 1
            rep.recovered += seen
    for key, tokens in sorted(found.items()):
        for tok in sorted(tokens - sent.get(key, set())):
            rep.unexpected.append((key, tok))
    return rep
