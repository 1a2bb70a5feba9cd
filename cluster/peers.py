"""HTTP calls from one region's processes to another region's API, through the fault proxy.

Region ``a`` never connects to region ``b`` directly: it connects to the proxy link
``a -> b`` (:mod:`geoshard.cluster.proxy`), which adds the RTT of the network model and
the faults chaos puts on it. :class:`PeerClient` keeps a small pool of keep-alive
connections per link and turns every failure (refused, reset, timeout, a 5xx) into the
retryable :class:`~geoshard.errors.BackendUnavailableError`, so callers fail over to the
next replica on one error class.

Examples:
    >>> peers = PeerClient("eu-west", {"eu-central": 41001}, token="...")   # doctest: +SKIP
    >>> peers.call("eu-central", "GET", "/healthz", timeout_s=0.5)          # doctest: +SKIP
    (200, b'{"ok": true, ...}')
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Mapping
from typing import Any

from geoshard.cluster.admission import waiting_on_peer
from geoshard.errors import BackendUnavailableError, ConfigError

__all__ = ["PeerClient", "PeerResponse"]

#: ``(status, body, headers)`` of a peer's answer.
PeerResponse = tuple[int, bytes, dict[str, str]]


class PeerClient:
    """Pooled HTTP/1.1 to other regions' APIs through the proxy links of ``src``.

    Args:
        src: the region the calls come from.
        links: ``destination region -> loopback port`` of the proxy link ``src -> dst``.
        token: the deployment's bearer token, sent on every call.
        pool_size: idle connections kept per destination.
    """

    def __init__(
        self, src: str, links: Mapping[str, int], token: str, *, pool_size: int = 8
    ) -> None:
        self.src = src
        self.links = dict(links)
        self._auth = f"Bearer {token}"
        self._pool: dict[str, list[http.client.HTTPConnection]] = {r: [] for r in self.links}
        self._pool_size = pool_size
        self._lock = threading.Lock()

    def _take(self, region: str, timeout_s: float) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._pool.get(region)
            if idle is None:
                raise ConfigError(f"no proxy link {self.src} -> {region}")
            if idle:
                conn = idle.pop()
                if conn.sock is not None:
                    conn.sock.settimeout(timeout_s)
                conn.timeout = timeout_s
                return conn, True
        return http.client.HTTPConnection("127.0.0.1", self.links[region], timeout=timeout_s), False

    def _give(self, region: str, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._pool[region]
            if len(idle) < self._pool_size:
                idle.append(conn)
                return
        conn.close()

    def call(
        self,
        region: str,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 2.0,
        accept_5xx: bool = False,
    ) -> PeerResponse:
        """One request to ``region``'s API; the answer whatever its status, except 5xx
        (unless ``accept_5xx``).

        Raises:
            BackendUnavailableError: the link or the region failed (refused, reset,
                timeout) or answered 5xx.
        """
        hdrs = {"Authorization": self._auth, "X-Geoshard-Forwarded-By": self.src}
        if headers:
            hdrs.update(headers)
        if body is not None:
            hdrs.setdefault("Content-Type", "application/json")
        for attempt in (0, 1):
            conn, reused = self._take(region, timeout_s)
            try:
                with waiting_on_peer():  # no CPU used here meanwhile: not in flight
                    conn.request(method, path, body=body, headers=hdrs)
                    resp = conn.getresponse()
                    data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                # a kept-alive connection the server closed meanwhile: one fresh attempt
                if (
                    reused
                    and attempt == 0
                    and isinstance(
                        exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
                    )
                ):
                    continue
                raise BackendUnavailableError(
                    f"{self.src} -> {region}: {method} {path.split('?')[0]} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            if resp.will_close:
                conn.close()
            else:
                self._give(region, conn)
            if resp.status >= 500 and not accept_5xx:
                raise BackendUnavailableError(
                    f"{self.src} -> {region}: {method} {path.split('?')[0]} answered "
                    f"{resp.status}: {data[:300].decode(errors='replace')}"
                )
            return resp.status, data, {k.lower(): v for k, v in resp.getheaders()}
        raise AssertionError("unreachable")  # pragma: no cover

    def call_json(
        self, region: str, method: str, path: str, payload: Any = None, *, timeout_s: float = 2.0
    ) -> tuple[int, Any]:
        """:meth:`call` with a JSON body and a JSON answer."""
        body = None if payload is None else json.dumps(payload).encode()
        status, data, _ = self.call(region, method, path, body=body, timeout_s=timeout_s)
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, {"error": data[:300].decode(errors="replace")}

    def close(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            for idle in self._pool.values():
                for conn in idle:
                    conn.close()
                idle.clear()
