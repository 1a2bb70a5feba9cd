"""Replica placement on the ring under region constraints.

Replicas of a key are found by walking the ring from the key (:meth:`HashRing.walk`),
keeping only healthy nodes in the allowed regions (the key's jurisdiction), and
preferring distinct regions: the walk first takes nodes whose region is not yet used;
only when fewer allowed regions have healthy nodes than the replication factor does it
fill up with further nodes in ring order. A node outside the allowed regions is never
returned, whatever the health of the others: the caller decides what to do when the
list is short or empty (the router raises ``NoHealthyReplicaError``).

Pure logic: health is an input (``down``), never a probe.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from types import MappingProxyType

import numpy as np

from geoshard.errors import ConfigError, did_you_mean
from geoshard.shards.hashing import Key, hash_keys
from geoshard.shards.ring import HashRing

__all__ = ["Placement"]


class Placement:
    """Region-aware replica placement over a :class:`HashRing`.

    Args:
        ring: the ring.
        node_region: the region of every node on the ring (extra entries are ignored).
        regions: every region name that may appear in ``allowed_regions``, including
            regions with no node on this ring; defaults to the regions of
            ``node_region``. Used to reject misspelt region names.

    Raises:
        ConfigError: a ring node has no region, or a region name is not a non-empty str.

    Examples:
        >>> ring = HashRing(["a1", "a2", "b1", "c1"])
        >>> placement = Placement(ring, {"a1": "eu", "a2": "eu", "b1": "us", "c1": "ap"})
        >>> sorted(placement.replicas("user:7", 2, {"eu", "us"}, down={"b1"}))
        ['a1', 'a2']
    """

    __slots__ = ("_codes", "_live_cache", "_node_region", "_regions", "_ring", "_tables")

    def __init__(
        self, ring: HashRing, node_region: Mapping[str, str], regions: Iterable[str] | None = None
    ) -> None:
        missing = [n for n in ring.nodes if n not in node_region]
        if missing:
            raise ConfigError(
                f"node_region has no region for ring node(s) "
                f"{', '.join(repr(n) for n in missing)}; map every node to "
                f"a region."
            )
        mapping = {n: node_region[n] for n in ring.nodes}
        known = set(mapping.values()) | set(regions or ())
        for region in known:
            if not isinstance(region, str) or not region:
                raise ConfigError(f"region {region!r} must be a non-empty str.")
        self._ring = ring
        self._node_region: Mapping[str, str] = MappingProxyType(mapping)
        self._regions = frozenset(known)
        self._live_cache: dict[tuple[frozenset[str], frozenset[str]], int] = {}
        # (allowed, down, r) -> {ring position of the key -> replicas}: the answer depends
        # on the key only through the ring point its walk starts at, so there are at most
        # point_count answers per (allowed, down, r)
        self._tables: dict[
            tuple[frozenset[str], frozenset[str], int], dict[int, tuple[str, ...]]
        ] = {}
        # (allowed, down, r) -> (ring point -> code, code -> replicas, replicas -> code)
        self._codes: dict[
            tuple[frozenset[str], frozenset[str], int],
            tuple[np.ndarray, list[tuple[str, ...]], dict[tuple[str, ...], int]],
        ] = {}

    @property
    def ring(self) -> HashRing:
        """The ring replicas are placed on."""
        return self._ring

    @property
    def node_region(self) -> Mapping[str, str]:
        """Read-only mapping ``node -> region`` for the ring's nodes."""
        return self._node_region

    @property
    def regions(self) -> frozenset[str]:
        """Every region name this placement accepts in ``allowed_regions``."""
        return self._regions

    def _eligible(
        self, key: Key, allowed_regions: Collection[str], down: Collection[str]
    ) -> Iterator[str]:
        """Healthy nodes in allowed regions, lazily, in ring order from the key."""
        if isinstance(allowed_regions, str):
            raise ConfigError(
                f"allowed_regions(={allowed_regions!r}) must be a collection "
                f"of region names, not one str."
            )
        for region in allowed_regions:
            if region not in self._regions:
                raise ConfigError(
                    f"region {region!r} is not known to this placement"
                    f"{did_you_mean(str(region), self._regions)}"
                )
        allowed = frozenset(allowed_regions)
        region_of = self._node_region
        return (n for n in self._ring.walk(key) if region_of[n] in allowed and n not in down)

    def _live_regions(self, allowed_regions: Collection[str], down: Collection[str]) -> int:
        """How many allowed regions have at least one healthy node (bounds the walk).

        Memoised per (allowed, down): callers such as the router and the simulator ask
        with the same few sets millions of times.
        """
        key = (frozenset(allowed_regions), frozenset(down))
        live = self._live_cache.get(key)
        if live is None:
            allowed, dead = key
            live = len({r for n, r in self._node_region.items() if r in allowed and n not in dead})
            if len(self._live_cache) >= 1024:
                self._live_cache.clear()
            self._live_cache[key] = live
        return live

    def _pick(
        self, eligible: Iterator[str], r: int, live_regions: int
    ) -> tuple[list[str], list[str]]:
        """Take one node per region in ring order, then fill with further nodes.

        Returns the picked nodes and the nodes passed over so far (in ring order), so a
        caller can continue the walk. Stops as soon as the answer is known: ``r`` distinct
        regions, or every live region covered and enough nodes passed over to fill up.
        """
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ConfigError(f"r(={r!r}) must be an int >= 1.")
        region_of = self._node_region
        picked: list[str] = []
        passed: list[str] = []
        used: set[str] = set()
        want_regions = min(r, live_regions)
        for node in eligible:
            if region_of[node] not in used and len(used) < want_regions:
                used.add(region_of[node])
                picked.append(node)
            else:
                passed.append(node)
            if len(used) == want_regions and len(picked) + len(passed) >= r:
                break
        fill = passed[: max(0, r - len(picked))]
        return picked + fill, passed[len(fill) :]

    def replicas(
        self,
        key: Key,
        r: int,
        allowed_regions: Collection[str],
        down: Collection[str] = frozenset(),
    ) -> list[str]:
        """Return up to ``r`` replica nodes for ``key``, primary first.

        Walks the ring from the key over healthy nodes in ``allowed_regions``; first
        takes one node per region in ring order, then, if fewer than ``r`` such regions
        exist, further nodes in ring order. The answer depends on the key only through
        the ring point the walk starts at, so it is memoised per (start point,
        ``allowed_regions``, ``down``, ``r``) when both sets are frozensets (at most
        ``ring.point_count`` entries per combination).

        Args:
            key: the key.
            r: the replication factor, ``>= 1``.
            allowed_regions: regions the key's data may live in.
            down: nodes to skip (unhealthy or draining).

        Returns:
            Distinct nodes, all in allowed regions and not down; shorter than ``r`` (even
            empty) when too few qualify.

        Raises:
            ConfigError: ``r < 1`` or an unknown region (with a did-you-mean suggestion).
            InputError: the key is bad.
        """
        allowed = allowed_regions if type(allowed_regions) is frozenset else None
        dead = down if type(down) is frozenset else None
        if allowed is None or dead is None or isinstance(r, bool) or not isinstance(r, int):
            live = self._live_regions(allowed_regions, down)
            chosen, _ = self._pick(self._eligible(key, allowed_regions, down), r, live)
            return chosen
        tk = (allowed, dead, r)
        table = self._tables.get(tk)
        pos = self._ring._position(key)  # validates the key
        if table is not None:
            hit = table.get(pos)
            if hit is not None:
                return list(hit)
        if table is None:
            # first use of (allowed, down, r): validate them with the reference walk
            live = self._live_regions(allowed, dead)
            chosen, _ = self._pick(self._eligible(key, allowed, dead), r, live)
            if len(self._tables) >= 64:
                self._tables.clear()
                self._codes.clear()
            table = self._tables[tk] = {}
            table[pos] = tuple(chosen)
            return chosen
        return list(self._fill(table, pos, r, allowed, dead))

    def _fill(
        self,
        table: dict[int, tuple[str, ...]],
        pos: int,
        r: int,
        allowed: frozenset[str],
        dead: frozenset[str],
    ) -> tuple[str, ...]:
        """The memo entry of start point ``pos``, computing and storing it if needed.

        A start point whose node is not eligible (outside ``allowed``, or down), or is
        the node of the next point too, has the answer of the next point (the walks
        differ only by a node they skip or meet twice): such points share one walk.
        """
        owners = self._ring._owner_list
        n = len(owners)
        region_of = self._node_region
        path: list[int] = []
        i = pos
        hit: tuple[str, ...] | None = None
        for _ in range(n):
            hit = table.get(i)
            if hit is not None:
                break
            path.append(i)
            node = owners[i]
            nxt = i + 1 if i + 1 < n else 0
            if region_of[node] in allowed and node not in dead and owners[nxt] != node:
                hit = tuple(self._pick_from(i, r, allowed, dead))
                break
            i = nxt
        if hit is None:  # no eligible node anywhere: every walk gives the same answer
            hit = tuple(self._pick_from(pos, r, allowed, dead))
        for q in path:
            table[q] = hit
        return hit

    def _pick_from(
        self, pos: int, r: int, allowed: frozenset[str], dead: frozenset[str]
    ) -> list[str]:
        """:meth:`_pick` over the walk from ring point ``pos``, without the generators.

        The same rule: one node per region in ring order (up to ``min(r, live regions)``
        regions), then fill with the nodes passed over, in ring order.
        """
        owners = self._ring._owner_list
        n = len(owners)
        total = len(self._node_region)
        region_of = self._node_region
        want = min(r, self._live_regions(allowed, dead))
        picked: list[str] = []
        passed: list[str] = []
        used: set[str] = set()
        seen: set[str] = set()
        i = pos
        for _ in range(n):
            node = owners[i]
            i = i + 1 if i + 1 < n else 0
            if node in seen:
                continue
            seen.add(node)
            reg = region_of[node]
            if reg in allowed and node not in dead:
                if reg not in used and len(used) < want:
                    used.add(reg)
                    picked.append(node)
                else:
                    passed.append(node)
                if len(used) == want and len(picked) + len(passed) >= r:
                    break
            if len(seen) == total:
                break
        return picked + passed[: max(0, r - len(picked))]

    def replicas_batch(
        self,
        keys: np.ndarray | list[int],
        r: int,
        allowed_regions: Collection[str],
        down: Collection[str] = frozenset(),
    ) -> list[tuple[str, ...]]:
        """:meth:`replicas` for many integer keys at once: ``[tuple(replicas(k, ...)) for k in keys]``.

        Hashes and finds the ring points vectorised, then answers from the per-start-point
        memo (walking the ring only for start points not seen before).

        Raises:
            ConfigError: ``r < 1`` or an unknown region.
            InputError: a key is bad.
        """
        arr = np.asarray(keys)
        if arr.size == 0:
            return []
        allowed, dead = frozenset(allowed_regions), frozenset(down)
        pos = self._ring.positions_of_hashes(hash_keys(arr)).tolist()
        table = self._tables.get((allowed, dead, r))
        out: list[tuple[str, ...]] = []
        klist: list[int] | None = None
        for i, p in enumerate(pos):
            hit = table.get(p) if table is not None else None
            if hit is None:
                if table is None:
                    if klist is None:
                        klist = arr.tolist()
                    hit = tuple(self.replicas(klist[i], r, allowed, dead))  # validates r, regions
                    table = self._tables.get((allowed, dead, r))
                else:
                    hit = self._fill(table, p, r, allowed, dead)
            out.append(hit)
        return out

    def replica_codes(
        self,
        keys: np.ndarray | list[int],
        r: int,
        allowed_regions: Collection[str],
        down: Collection[str] = frozenset(),
    ) -> tuple[np.ndarray, list[tuple[str, ...]]]:
        """:meth:`replicas_batch` as integer codes: ``(codes, sets)`` with
        ``sets[codes[i]] == tuple(replicas(keys[i], ...))``.

        Vectorised end to end (hash, ring point, point -> code); the ring is walked only
        for points not seen before under this (allowed, down, r). ``sets`` only grows, so
        codes stay valid for later calls with the same arguments.

        Raises:
            ConfigError: ``r < 1`` or an unknown region.
            InputError: a key is bad.
        """
        arr = np.asarray(keys)
        allowed, dead = frozenset(allowed_regions), frozenset(down)
        tk = (allowed, dead, r)
        if arr.size == 0:
            entry = self._codes.get(tk)
            return np.empty(0, dtype=np.int64), (entry[1] if entry else [])
        if tk not in self._tables:
            self.replicas(int(arr.reshape(-1)[0]), r, allowed, dead)  # validates, makes the table
        table = self._tables[tk]
        entry = self._codes.get(tk)
        if entry is None:
            entry = self._codes[tk] = self._all_codes(allowed, dead, r) or (
                np.full(self._ring.point_count, -1, dtype=np.int64),
                [],
                {},
            )
        code_of, sets, index = entry
        pos = self._ring.positions_of_hashes(hash_keys(arr))
        codes = code_of[pos]
        missing = codes < 0
        if missing.any():
            for p in np.unique(pos[missing]).tolist():
                hit = self._fill(table, p, r, allowed, dead)
                c = index.get(hit)
                if c is None:
                    c = index[hit] = len(sets)
                    sets.append(hit)
                code_of[p] = c
            codes = code_of[pos]
        return codes, sets

    def _all_codes(
        self,
        allowed: frozenset[str],
        dead: frozenset[str],
        r: int,
    ) -> tuple[np.ndarray, list[tuple[str, ...]], dict[tuple[str, ...], int]] | None:
        """Every ring point's replica set at once, vectorised, when the rule is simple:
        ``r`` is 1, or 2 with at least two live allowed regions (the first eligible node,
        then the next one of another region). ``None`` otherwise (the walk decides, point
        by point). ``tests/unit/test_placement.py`` checks it against the walk."""
        live = self._live_regions(allowed, dead)
        if r not in (1, 2) or live < r:
            return None
        ring = self._ring
        names = ring.nodes
        region_idx = {reg: i for i, reg in enumerate(sorted(set(self._node_region.values())))}
        node_ok = np.array([self._node_region[n] in allowed and n not in dead for n in names])
        node_reg = np.array([region_idx[self._node_region[n]] for n in names], dtype=np.int64)
        owner = ring.point_nodes
        elig = np.flatnonzero(node_ok[owner])  # eligible ring points, in ring order
        m = len(elig)
        n_pts = ring.point_count
        # for every point, the first eligible point at or after it (circularly)
        first = np.searchsorted(elig, np.arange(n_pts), side="left")
        first[first == m] = 0
        a_node = owner[elig[first]]
        if r == 1:
            pairs = a_node[:, None]
        else:
            reg = node_reg[owner[elig]]
            reg2 = np.concatenate([reg, reg])
            change = np.flatnonzero(reg2[:-1] != reg2[1:])  # k: run ends at k
            # the first index after i where the region differs: end of i's run + 1
            nxt = np.searchsorted(change, np.arange(m), side="left")
            other = (change[nxt] + 1) % m
            pairs = np.stack([a_node, owner[elig[other[first]]]], axis=1)
        width = len(names)
        flat = pairs[:, 0] if r == 1 else pairs[:, 0] * width + pairs[:, 1]
        uniq, codes = np.unique(flat, return_inverse=True)
        rows = uniq[:, None] if r == 1 else np.stack([uniq // width, uniq % width], axis=1)
        sets = [tuple(names[i] for i in row) for row in rows.tolist()]
        index = {t: c for c, t in enumerate(sets)}
        return codes.reshape(-1).astype(np.int64), sets, index

    def failover_order(
        self,
        key: Key,
        r: int,
        allowed_regions: Collection[str],
        down: Collection[str] = frozenset(),
    ) -> list[str]:
        """Return every candidate node for ``key``: the replicas, then the rest in ring order.

        A router tries the nodes in this order; it never leaves ``allowed_regions``.

        Args:
            key: the key.
            r: the replication factor, ``>= 1``.
            allowed_regions: regions the key's data may live in.
            down: nodes to leave out.

        Returns:
            ``replicas(key, r, ...)`` followed by every other healthy node in the allowed
            regions, in ring order from the key.

        Raises:
            ConfigError: ``r < 1`` or an unknown region.
            InputError: the key is bad.
        """
        eligible = self._eligible(key, allowed_regions, down)
        first, passed = self._pick(eligible, r, self._live_regions(allowed_regions, down))
        return first + passed + list(eligible)
