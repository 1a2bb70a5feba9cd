"""The fault proxy between regions: RTT added per direction, drop, reset, down, partition,
and its token-guarded control channel. A real echo server behind real sockets."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from geoshard.cluster.ports import PortAllocator
from geoshard.cluster.proxy import FaultProxy, Link, ProxyControl
from geoshard.errors import InputError

pytestmark = pytest.mark.integration
TOKEN = "test-token-not-a-secret"


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.transport.abort()


class Running:
    """An echo server and a proxy with links a->b and b->a, on a loop in a thread."""

    def __init__(self, rtt_ms: float) -> None:
        ports = PortAllocator()
        self.echo_port = ports.take("echo")
        self.ab, self.ba, self.control = ports.take("a->b"), ports.take("b->a"), ports.take("ctl")
        self.loop = asyncio.new_event_loop()
        self.proxy = FaultProxy(
            [
                Link("a", "b", self.ab, ("127.0.0.1", self.echo_port), rtt_ms),
                Link("b", "a", self.ba, ("127.0.0.1", self.echo_port), rtt_ms),
            ],
            self.control,
            TOKEN,
        )
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            server = await asyncio.start_server(_echo, "127.0.0.1", self.echo_port)
            await self.proxy.start()
            self.ready.set()
            await self.proxy.stopped.wait()
            await self.proxy.close()
            server.close()
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            await server.wait_closed()

        self.loop.run_until_complete(main())
        self.loop.close()

    def start(self) -> Running:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.proxy.stopped.set)
        self.thread.join(10)


@pytest.fixture
def running() -> Iterator[Running]:
    r = Running(rtt_ms=40.0).start()
    try:
        yield r
    finally:
        r.stop()


def _round_trip(port: int, payload: bytes = b"ping", timeout_s: float = 2.0) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        t0 = time.perf_counter()
        s.sendall(payload)
        got = s.recv(65536)
        return got, (time.perf_counter() - t0) * 1000


def _broken(port: int, timeout_s: float = 0.5) -> bool:
    """True when a round trip through ``port`` fails: reset, refused, closed or timed out."""
    try:
        got, _ = _round_trip(port, timeout_s=timeout_s)
    except OSError:  # ConnectionResetError, ConnectionRefusedError, TimeoutError ...
        return True
    return not got


def _open_conn_broken(s: socket.socket) -> bool:
    try:
        s.sendall(b"y")
        return not s.recv(10)
    except OSError:
        return True


def test_a_round_trip_costs_the_rtt(running: Running) -> None:
    got, ms = _round_trip(running.ab)
    assert got == b"ping"
    assert 38.0 <= ms < 400.0
    ctl = ProxyControl(running.control, TOKEN)
    ctl.set_link("a", "b", mode="ok", delay_ms=30)
    _, slower = _round_trip(running.ab)
    assert slower >= 38.0 + 60.0  # 30 ms more each way


def test_drop_is_a_black_hole_until_healed(running: Running) -> None:
    ctl = ProxyControl(running.control, TOKEN)
    ctl.set_link("a", "b", mode="drop")
    with pytest.raises(TimeoutError):
        _round_trip(running.ab, timeout_s=0.4)  # accepted, then nothing comes back
    assert _round_trip(running.ba)[0] == b"ping"  # the other direction is untouched
    ctl.heal()
    assert _round_trip(running.ab)[0] == b"ping"


def test_reset_and_down_break_open_connections_and_refuse_new_ones(running: Running) -> None:
    ctl = ProxyControl(running.control, TOKEN)
    with socket.create_connection(("127.0.0.1", running.ab), timeout=2) as s:
        s.sendall(b"x")
        assert s.recv(10) == b"x"
        ctl.set_link("a", "b", mode="reset")
        assert _open_conn_broken(s)
    for mode in ("reset", "down"):
        ctl.set_link("a", "b", mode=mode)
        assert _broken(running.ab)
    links = {(lk["src"], lk["dst"]): lk for lk in ctl.links()}
    assert links[("a", "b")]["refused"] >= 1


def test_partition_cuts_both_directions_and_heal_restores(running: Running) -> None:
    ctl = ProxyControl(running.control, TOKEN)
    ctl.partition("a", "b")
    assert {lk["mode"] for lk in ctl.links()} == {"down"}
    for port in (running.ab, running.ba):
        assert _broken(port)
    ctl.heal("a", "b")
    assert {lk["mode"] for lk in ctl.links()} == {"ok"}
    assert _round_trip(running.ab)[0] == b"ping"


def test_the_control_channel_needs_the_token_and_names_bad_input(running: Running) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", running.control, timeout=2)
    conn.request("GET", "/links")
    resp = conn.getresponse()
    assert resp.status == 401 and "bearer token" in json.loads(resp.read())["error"]
    conn.close()
    ctl = ProxyControl(running.control, TOKEN)
    with pytest.raises(
        InputError, match="mode 'flaky' is unknown; use one of ok, drop, reset, down"
    ):
        ctl.set_link("a", "b", mode="flaky")
    with pytest.raises(InputError, match="no link a->c"):
        ctl.set_link("a", "c", mode="drop")
    with pytest.raises(InputError, match="two different regions"):
        ctl.partition("a", "a")
    assert ProxyControl(running.control, "wrong").healthy()  # health needs no token
