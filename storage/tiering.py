"""Moving data between tiers: demotion hot -> cold, read-through promotion, warm backfill.

The one rule that matters: **demotion writes and verifies the cold copy before it
deletes the hot one**, so a crash at any point leaves every key readable from the hot
tier, the cold tier or both (the crash test kills a demoting process at random points
and checks exactly that). Residency is enforced by the stores' :meth:`Tier.guard_write`
before every write, and :class:`TierManager` checks it up front as well, so a key is
never half-moved into a region it may not live in.

Time is an input (``now_s``), never read from a clock, so the policy is testable and the
simulator can share it.

Examples:
    >>> mgr = TierManager(hot, cold, policy=TieringPolicy(max_idle_s=600))   # doctest: +SKIP
    >>> mgr.demote([DataKey("user_features", UserKey("eu", 1))], now_s=1e9)  # doctest: +SKIP
    DemotionResult(demoted=1, absent=0)
    >>> mgr.get(DataKey("user_features", UserKey("eu", 1)), now_s=1e9 + 5)   # doctest: +SKIP
    b'...'
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from geoshard.errors import BackendError, InputError
from geoshard.keys import DataKey
from geoshard.storage.base import Catalog, ColdStore, HotStore, VectorStore
from geoshard.storage.keylayout import parse_key_text

__all__ = [
    "DemotionResult",
    "TierManager",
    "TieringPolicy",
    "decode_embedding",
    "encode_embedding",
]


class TieringPolicy(BaseModel):
    """When keys move between tiers.

    Attributes:
        max_idle_s: a hot key unused for this long is demoted to cold by :meth:`TierManager.sweep`.
        min_access_count: a cold read promotes the key to hot only once it has been read
            this many times (1 = promote on the first miss), so one-off reads do not
            evict the working set.
        hot_ttl_s: TTL of a promoted hot copy (None = no TTL; the cold copy stays).
        batch_size: keys per demotion batch (one cold file per partition per batch).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_idle_s: float = Field(default=3600.0, gt=0)
    min_access_count: int = Field(default=1, ge=1)
    hot_ttl_s: float | None = Field(default=86_400.0, gt=0)
    batch_size: int = Field(default=500, gt=0, le=100_000)

    def should_demote(self, last_access_s: float, now_s: float) -> bool:
        """True when a hot key last used at ``last_access_s`` is idle enough to demote."""
        return now_s - last_access_s >= self.max_idle_s

    def should_promote(self, access_count: int) -> bool:
        """True when a key read ``access_count`` times (this read included) goes to hot."""
        return access_count >= self.min_access_count


@dataclass(frozen=True)
class DemotionResult:
    """What a demotion did.

    Attributes:
        demoted: keys moved to cold (cold copy verified, hot copy deleted).
        absent: keys that were not in hot.
        kept: keys rewritten in hot while they were being demoted: the newer value stays
            hot (its older cold copy is superseded on the next demotion).
    """

    demoted: int
    absent: int
    kept: int = 0


def _date_of(now_s: float) -> str:
    return dt.datetime.fromtimestamp(now_s, tz=dt.UTC).date().isoformat()


class TierManager:
    """Moves keys between one region's hot, cold and warm tiers.

    Args:
        hot: the hot tier (Redis).
        cold: the cold tier (Parquet); the durable copy of demoted keys.
        warm: the vector tier, for :meth:`backfill_warm` (optional).
        catalog: records tier membership and access counts (optional; without it,
            :meth:`sweep` is unavailable and promotion ignores ``min_access_count``).
        policy: the tiering policy.
    """

    def __init__(
        self,
        hot: HotStore,
        cold: ColdStore,
        *,
        warm: VectorStore | None = None,
        catalog: Catalog | None = None,
        policy: TieringPolicy | None = None,
    ) -> None:
        self.hot = hot
        self.cold = cold
        self.warm = warm
        self.catalog = catalog
        self.policy = policy or TieringPolicy()

    # -- demotion -----------------------------------------------------------------
    def demote(
        self,
        keys: Sequence[DataKey],
        *,
        now_s: float,
        on_cold_written: Callable[[Sequence[DataKey]], None] | None = None,
    ) -> DemotionResult:
        """Move ``keys`` from hot to cold: write cold, verify it, then delete hot.

        Args:
            keys: the keys to demote (absent ones are counted and skipped).
            now_s: the current time (cold partition date, catalog timestamps).
            on_cold_written: called with each batch after its cold copy is verified and
                before its hot copies are deleted (a hook for crash tests and metrics).

        Raises:
            ResidencyError: a key this region's cold tier may not store; nothing moved.
            BackendError: the cold copy did not read back equal; the hot copies are kept.
        """
        self.cold.guard_write(keys)
        demoted = absent = kept = 0
        date = _date_of(now_s)
        size = self.policy.batch_size
        for start in range(0, len(keys), size):
            batch = list(keys[start : start + size])
            values = self.hot.get_many(batch)
            present = [(k, v) for k, v in zip(batch, values, strict=True) if v is not None]
            absent += len(batch) - len(present)
            if not present:
                continue
            self.cold.append(present, date=date)
            back = self.cold.read_many([k for k, _ in present])
            for (k, v), got in zip(present, back, strict=True):
                if got != v:
                    raise BackendError(
                        f"cold copy of '{k}' did not read back equal; the hot copy "
                        "is kept, check the cold store and retry"
                    )
            if on_cold_written is not None:
                on_cold_written([k for k, _ in present])
            for k, v in present:
                # A write that landed after our read must not be dropped: delete only an
                # unchanged value, atomically (the next sweep demotes the newer one, so the
                # key stays a hot member of the catalog until then).
                if self.hot.delete_if_equal(k, v):
                    demoted += 1
                    if self.catalog is not None:
                        self.catalog.set_tier(k, "cold", now_s=now_s)
                else:
                    kept += 1
        return DemotionResult(demoted=demoted, absent=absent, kept=kept)

    def sweep(self, *, now_s: float) -> DemotionResult:
        """Demote every hot key the catalog says is idle for ``policy.max_idle_s``.

        Raises:
            InputError: without a catalog.
        """
        if self.catalog is None:
            raise InputError(
                "sweep needs a catalog to know when keys were last used; pass "
                "catalog= to TierManager"
            )
        idle = [
            m
            for m in self.catalog.members("hot")
            if self.policy.should_demote(m.last_access_s, now_s)
        ]
        keys = [parse_key_text(m.key) for m in idle]
        return self.demote(keys, now_s=now_s)

    # -- read-through promotion ---------------------------------------------------
    def get(self, key: DataKey, *, now_s: float) -> bytes | None:
        """Read ``key``: hot first, then cold; a cold hit is promoted to hot per the policy."""
        value = self.hot.get(key)
        if value is not None:
            if self.catalog is not None:
                self.catalog.record_access(key, "hot", now_s=now_s)
            return value
        value = self.cold.read(key)
        if value is None:
            return None
        count = 1
        if self.catalog is not None:
            self.catalog.record_access(key, "cold", now_s=now_s)
            m = self.catalog.membership(key)
            count = m.access_count if m is not None else 1
        if self.policy.should_promote(count):
            self.hot.guard_write([key])
            self.hot.put(key, value, ttl_s=self.policy.hot_ttl_s)
            if self.catalog is not None:
                self.catalog.set_tier(key, "hot", now_s=now_s)
        return value

    # -- warm backfill ------------------------------------------------------------
    def backfill_warm(
        self,
        data_class: str,
        *,
        decode: Callable[[bytes], tuple[np.ndarray, Mapping[str, Any]]] | None = None,
        batch_size: int = 1000,
    ) -> int:
        """Load the newest cold embeddings of ``data_class`` into the warm tier.

        Args:
            data_class: ``item_embeddings`` or ``user_embeddings``.
            decode: turns a cold value into (vector, attributes); default
                :func:`decode_embedding`.
            batch_size: rows per upsert.

        Returns:
            How many embeddings were written.

        Raises:
            InputError: without a warm tier, or for a class the warm tier does not hold.
        """
        if self.warm is None:
            raise InputError("backfill_warm needs a warm tier; pass warm= to TierManager")
        if data_class not in ("item_embeddings", "user_embeddings"):
            raise InputError(
                f"data class '{data_class}' has no embeddings; use item_embeddings "
                "or user_embeddings"
            )
        decode = decode or decode_embedding
        rows = self.cold.scan(data_class, latest_only=True)
        written = 0
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            keys = [parse_key_text(f"{data_class}:{owner}") for owner, _ in chunk]
            decoded = [decode(v) for _, v in chunk]
            written += self.warm.upsert(
                keys, np.stack([d[0] for d in decoded]), [dict(d[1]) for d in decoded]
            )
        return written


# --------------------------------------------------------------------------- helpers


def encode_embedding(vector: object, attrs: Mapping[str, Any] | None = None) -> bytes:
    """Serialise an embedding and its attributes for the cold tier.

    Format: 4-byte little-endian JSON length, JSON attributes, float32 little-endian vector.
    """
    arr = np.ascontiguousarray(np.asarray(vector, dtype="<f4").ravel())
    head = json.dumps(dict(attrs or {}), sort_keys=True).encode()
    return struct.pack("<I", len(head)) + head + arr.tobytes()


def decode_embedding(data: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """Inverse of :func:`encode_embedding`.

    Raises:
        InputError: for bytes that are not an encoded embedding.
    """
    try:
        (n,) = struct.unpack_from("<I", data, 0)
        attrs = json.loads(data[4 : 4 + n])
        vec = np.frombuffer(data[4 + n :], dtype="<f4").astype(np.float32)
    except (struct.error, ValueError) as exc:
        raise InputError(
            f"cold value is not an encoded embedding ({exc}); write it with encode_embedding()"
        ) from None
    return vec, attrs
