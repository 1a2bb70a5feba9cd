"""The bounded load generator of a chaos run: threads over ``http.client``.

Each thread sends requests to the region APIs at its share of the target rate, until
the run's stop event, its deadline or the shared operation budget, whichever comes
first. Every request becomes a :class:`~geoshard.cluster.chaos.timeline.Sample`; every
write also goes into the :class:`~geoshard.cluster.chaos.ledger.Ledger`:

* ``feature_write``: ``PUT /v1/users/{u}/features`` of a user never written before,
  with a unique token as its only feature (``{"chaos": token}``);
* ``interaction_write``: ``POST /v1/interactions`` of one interaction whose event id
  is the token;
* ``feature_read``: ``GET /v1/users/{u}/features`` of a seeded user.

A request goes to the first API of the entry order (the scenario's region first);
when that API refuses the connection (it is down), the next one is tried within the
same operation, as a client behind GeoDNS would. Outcomes of writes: 2xx ``ok``; a
4xx, or no API taking the connection, ``fail`` (nothing was sent or written); a 5xx,
a timeout or a dropped connection ``info`` (indeterminate).

Locust is not used here on purpose: the ledger needs the outcome of every single
write, in this process (``geoshard load`` runs Locust for throughput).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from geoshard.cluster.chaos.ledger import Ledger
from geoshard.cluster.chaos.timeline import Sample

__all__ = ["LoadConfig", "LoadGenerator", "UserPool"]

#: Hard bounds, whatever the caller asks.
MAX_THREADS = 64
MAX_OPS = 1_000_000


class UserPool:
    """Unique user keys for writes, each used once (thread-safe).

    Args:
        jurisdiction: the users' jurisdiction.
        base: the first id tried (a run-specific range, so runs never share a key).
        accept: which candidate user keys to hand out (e.g. those whose ring primary
            is the scenario's region); tried in id order.
        max_tries: bound on candidates tried per key.
    """

    def __init__(
        self,
        jurisdiction: str,
        base: int,
        accept: Callable[[str], bool] = lambda _u: True,
        max_tries: int = 1000,
    ) -> None:
        self.jurisdiction = jurisdiction
        self._next = base
        self._accept = accept
        self._max_tries = max_tries
        self._lock = threading.Lock()

    def take(self) -> str:
        """The next unused user key.

        Raises:
            RuntimeError: ``max_tries`` candidates in a row were not accepted.
        """
        with self._lock:
            for _ in range(self._max_tries):
                user = f"{self.jurisdiction}:{self._next}"
                self._next += 1
                if self._accept(user):
                    return user
        raise RuntimeError(f"no acceptable {self.jurisdiction} user in {self._max_tries} ids")


@dataclass
class LoadConfig:
    """What the load generator sends.

    Attributes:
        ports: each region's API port.
        entry_order: regions in the order a client tries their APIs.
        token: the API bearer token.
        run_id: a short run-unique prefix of every token.
        mix: weight of each operation (``feature_write``, ``interaction_write``,
            ``feature_read``).
        rate_per_s: target operations per second, all threads together.
        threads: concurrent clients (1..64).
        duration_s: the deadline from :meth:`LoadGenerator.start`.
        max_ops: the operation budget (1..1,000,000).
        timeout_s: per-request socket timeout.
        read_users: user keys to read.
        seed: seeds the operation choice of every thread.
    """

    ports: Mapping[str, int]
    entry_order: Sequence[str]
    token: str
    run_id: str
    mix: Mapping[str, float]
    rate_per_s: float = 100.0
    threads: int = 8
    duration_s: float = 30.0
    max_ops: int = 100_000
    timeout_s: float = 5.0
    read_users: Sequence[str] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.threads <= MAX_THREADS:
            raise ValueError(f"threads(={self.threads}) must be in 1..{MAX_THREADS}")
        if not 1 <= self.max_ops <= MAX_OPS:
            raise ValueError(f"max_ops(={self.max_ops}) must be in 1..{MAX_OPS}")
        if not self.rate_per_s > 0 or not self.duration_s > 0 or not self.timeout_s > 0:
            raise ValueError("rate_per_s, duration_s and timeout_s must be > 0")
        if not self.entry_order:
            raise ValueError("entry_order names no region")


class LoadGenerator:
    """Threads that send the :class:`LoadConfig`'s requests; see the module docstring.

    Args:
        config: what to send.
        ledger: receives every write.
        write_users: unique users for feature writes.
        interaction_users: unique users for interactions.
        clock: seconds since the run started (shared with the fault schedule).
    """

    def __init__(
        self,
        config: LoadConfig,
        ledger: Ledger,
        write_users: UserPool,
        interaction_users: UserPool,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.write_users = write_users
        self.interaction_users = interaction_users
        self.clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._ops = 0
        self._samples: list[Sample] = []
        ops = [k for k, w in config.mix.items() if w > 0]
        if not ops:
            raise ValueError("the mix gives no operation a weight > 0")
        self._ops_names = ops
        self._multiplier = 1.0
        self._weights = [config.mix[k] for k in ops]

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the threads; they stop by themselves at the deadline or budget."""
        deadline = self.clock() + self.config.duration_s
        for i in range(self.config.threads):
            th = threading.Thread(
                target=self._run, args=(i, deadline), name=f"chaos-load-{i}", daemon=True
            )
            th.start()
            self._threads.append(th)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop every thread and wait for them (bounded by ``timeout_s``)."""
        self._stop.set()
        end = time.monotonic() + timeout_s
        for th in self._threads:
            th.join(timeout=max(0.0, end - time.monotonic()))

    def set_multiplier(self, factor: float) -> None:
        """Send ``factor`` times the configured rate from now on (a surge; 1 = back).

        Raises:
            ValueError: ``factor`` not in (0, 10].
        """
        if not 0 < factor <= 10:
            raise ValueError(f"factor(={factor}) must be in (0, 10]")
        self._multiplier = factor

    def samples(self) -> list[Sample]:
        """Every request so far, in completion order."""
        with self._lock:
            return list(self._samples)

    # ------------------------------------------------------------------ one thread
    def _take_op(self) -> bool:
        with self._lock:
            if self._ops >= self.config.max_ops:
                return False
            self._ops += 1
            return True

    def _run(self, index: int, deadline: float) -> None:
        cfg = self.config
        rng = random.Random(cfg.seed * 1_000_003 + index)
        conns: dict[str, http.client.HTTPConnection] = {}
        next_t = self.clock() + rng.uniform(0, cfg.threads / cfg.rate_per_s)
        try:
            while not self._stop.is_set():
                now = self.clock()
                if now >= deadline or not self._take_op():
                    return
                if next_t > now and self._stop.wait(min(next_t - now, deadline - now)):
                    return
                interval = cfg.threads / (cfg.rate_per_s * self._multiplier)
                next_t = max(next_t + interval, self.clock() - interval)
                op = rng.choices(self._ops_names, self._weights)[0]
                self._one(op, rng, conns)
        finally:
            for c in conns.values():
                with contextlib.suppress(OSError):
                    c.close()

    def _one(
        self, op: str, rng: random.Random, conns: dict[str, http.client.HTTPConnection]
    ) -> None:
        cfg = self.config
        op_id: int | None = None
        if op == "feature_write":
            user = self.write_users.take()
            t0 = self.clock()
            tok = f"{cfg.run_id}-{t0:.3f}-{rng.getrandbits(32):08x}"
            op_id = self.ledger.invoke("feature", f"user_features:{user}", tok, t_s=t0)
            method, path = "PUT", f"/v1/users/{user}/features"
            body: bytes | None = json.dumps({"features": {"chaos": tok}}).encode()
        elif op == "interaction_write":
            user = self.interaction_users.take()
            t0 = self.clock()
            tok = f"{cfg.run_id}-{t0:.3f}-{rng.getrandbits(32):08x}"
            op_id = self.ledger.invoke("interaction", f"interactions:{user}", tok, t_s=t0)
            ev = {"user_id": user, "item_id": "chaos-item", "type": "click", "event_id": tok}
            method, path = "POST", "/v1/interactions"
            body = json.dumps({"interactions": [ev]}).encode()
        else:
            user = rng.choice(list(cfg.read_users)) if cfg.read_users else "eu:0"
            t0 = self.clock()
            method, path, body = "GET", f"/v1/users/{user}/features", None
        status, data, sent = self._send(method, path, body, conns)
        t1 = self.clock()
        with self._lock:
            self._samples.append(Sample(round(t0, 4), op, status, (t1 - t0) * 1000))
        if op_id is None:
            return
        if 200 <= status < 300:
            region = ""
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                doc = json.loads(data)
                region = (
                    doc.get("written_to", "")
                    if op == "feature_write"
                    else next(iter(doc.get("by_region") or {}), "")
                )
            if region:
                self.ledger.complete(op_id, "ok", region=region, t_s=t1, detail=str(status))
            else:  # an answer we cannot read: the write's fate is unknown to us
                self.ledger.complete(op_id, "info", t_s=t1, detail=f"{status} unreadable")
        elif not sent or 400 <= status < 500:
            self.ledger.complete(op_id, "fail", t_s=t1, detail=str(status or "not sent"))
        else:
            self.ledger.complete(op_id, "info", t_s=t1, detail=str(status or "no answer"))

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        conns: dict[str, http.client.HTTPConnection],
    ) -> tuple[int, bytes, bool]:
        """``(status, body, sent)``: status 0 when no answer came; ``sent`` False when
        no API took the connection (so nothing can have been written)."""
        cfg = self.config
        headers = {"Authorization": f"Bearer {cfg.token}", "Content-Type": "application/json"}
        for region in cfg.entry_order:
            conn = conns.get(region)
            if conn is None:
                conn = http.client.HTTPConnection(
                    "127.0.0.1", cfg.ports[region], timeout=cfg.timeout_s
                )
                try:
                    conn.connect()
                    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    conn.close()
                    continue  # the API is down: try the next region's
                conns[region] = conn
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    conn.close()
                    conns.pop(region, None)
                return resp.status, data, True
            except (ConnectionRefusedError, http.client.RemoteDisconnected) as exc:
                conn.close()
                conns.pop(region, None)
                if isinstance(exc, http.client.RemoteDisconnected):
                    return 0, b"", True
            except (OSError, http.client.HTTPException):
                conn.close()
                conns.pop(region, None)
                return 0, b"", True
        return 0, b"", False
