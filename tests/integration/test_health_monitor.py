"""The health monitor turns probes of real HTTP servers into the router's Health."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from geoshard.cluster.envelope import new_version, unwrap, wrap
from geoshard.cluster.health import HealthMonitor
from geoshard.cluster.peers import PeerClient
from geoshard.cluster.ports import PortAllocator
from geoshard.cluster.routing import Health
from geoshard.errors import BackendUnavailableError

pytestmark = pytest.mark.integration


class _Region(BaseHTTPRequestHandler):
    ok = True

    def do_GET(self) -> None:
        body = json.dumps({"ok": type(self).ok}).encode()
        self.send_response(200 if type(self).ok else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def regions() -> Iterator[tuple[dict[str, int], type[_Region]]]:
    handler = type("H", (_Region,), {"ok": True})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    dead = PortAllocator().take("nobody listens here")
    try:
        yield {"b": server.server_address[1], "c": dead}, handler
    finally:
        server.shutdown()
        server.server_close()


def test_down_unreachable_and_back(regions: tuple[dict[str, int], type[_Region]]) -> None:
    ports, handler = regions
    local = {"ok": True}
    peers = PeerClient("a", ports, token="t")
    mon = HealthMonitor("a", ["a", "b", "c"], lambda: local["ok"], peers, timeout_s=0.5, misses=2)
    assert mon.check_once() == Health()  # one miss of c is not yet a partition
    h = mon.check_once()
    assert h.partitions == {frozenset({"a", "c"})} and not h.down_regions
    assert mon.views["c"].state == "unreachable"
    assert "a -> c: GET /healthz failed" in mon.views["c"].detail
    handler.ok = False
    assert mon.check_once().down_regions == {"b"}
    handler.ok = True
    local["ok"] = False
    assert mon.check_once().down_regions == frozenset() and mon.local_ok  # one miss
    h = mon.check_once()
    assert h.down_regions == {"a"} and not mon.local_ok
    local["ok"] = True
    assert mon.check_once().down_regions == frozenset()
    peers.close()


def test_a_peer_failure_is_retryable_and_names_the_link(
    regions: tuple[dict[str, int], type[_Region]],
) -> None:
    ports, _ = regions
    peers = PeerClient("a", ports, token="t")
    status, body, _ = peers.call("b", "GET", "/healthz", timeout_s=1)
    assert status == 200 and json.loads(body) == {"ok": True}
    with pytest.raises(BackendUnavailableError, match=r"a -> c: GET /healthz failed") as err:
        peers.call("c", "GET", "/healthz", timeout_s=0.5)
    assert err.value.retryable
    peers.close()


def test_versions_increase_and_survive_the_envelope() -> None:
    a, b = new_version(), new_version()
    assert b > a
    assert unwrap(wrap(b, b"payload")) == (b, b"payload")
    assert unwrap(b"no envelope") == (0, b"no envelope")
