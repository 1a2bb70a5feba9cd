"""The fault proxy between regions: an asyncio TCP proxy that adds the spec's RTT and can
drop, delay, reset or partition on command.

Every ordered pair of regions ``(a, b)`` has a :class:`Link`: region ``a`` reaches region
``b``'s API by connecting to the link's loopback port, and every chunk of bytes crosses
the link after ``rtt_ms / 2`` (each direction), so a request/response round trip costs
the RTT the network model gives (:class:`~geoshard.regions.network.NetworkModel`).
Faults use Toxiproxy's vocabulary, so a Toxiproxy recipe translates 1:1:

==========  ==============================================================================
mode        effect on the link
==========  ==============================================================================
``ok``      forward, after the base delay plus ``delay_ms``
``drop``    accept connections, forward nothing (a black hole: the peer times out)
``reset``   reset every connection, open and new (TCP RST, as ``reset_peer``)
``down``    refuse new connections (closed at once) and reset open ones
==========  ==============================================================================

``partition(a, b)`` puts both directions between ``a`` and ``b`` ``down``; ``heal()``
sets every link back to ``ok`` with no extra delay.

The control channel is a small HTTP/1.1 server on loopback, guarded by the deployment's
bearer token: ``GET /links``, ``POST /links/<src>/<dst>`` (JSON ``{"mode", "delay_ms"}``),
``POST /partition`` (``{"a", "b"}``), ``POST /heal`` (``{}`` or ``{"a", "b"}``),
``GET /healthz``. :class:`ProxyControl` is its client (``geoshard chaos`` and tests).

Run as ``python -m geoshard.cluster.proxy CONFIG.json`` (written by ``geoshard up``).

Examples:
    >>> ctl = ProxyControl(port=41000, token="...")          # doctest: +SKIP
    >>> ctl.set_link("eu-west", "us-east", mode="drop")      # doctest: +SKIP
    >>> ctl.partition("eu-west", "eu-central"); ctl.heal()   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http.client
import json
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from geoshard.errors import BackendError, ConfigError, InputError

__all__ = ["MODES", "FaultProxy", "Link", "LinkFault", "ProxyControl", "main"]

Mode = Literal["ok", "drop", "reset", "down"]
#: The link modes, as the control channel spells them.
MODES: tuple[str, ...] = ("ok", "drop", "reset", "down")
_CHUNK = 65536
_MAX_CONTROL_BODY = 64 * 1024


@dataclass
class LinkFault:
    """The fault on one link: a mode and an extra one-way delay in ms."""

    mode: Mode = "ok"
    delay_ms: float = 0.0

    @classmethod
    def parse(cls, data: object) -> LinkFault:
        """Validate a control request body.

        Raises:
            InputError: an unknown mode or a delay that is not a finite number >= 0.
        """
        if not isinstance(data, dict):
            raise InputError('a link fault is a JSON object such as {"mode": "drop"}')
        extra = set(data) - {"mode", "delay_ms"}
        if extra:
            raise InputError(f"unknown field(s) {sorted(extra)}; use mode and delay_ms")
        mode = data.get("mode", "ok")
        if mode not in MODES:
            raise InputError(f"mode {mode!r} is unknown; use one of {', '.join(MODES)}")
        delay = data.get("delay_ms", 0.0)
        if (
            isinstance(delay, bool)
            or not isinstance(delay, (int, float))
            or not (0 <= delay < 600_000)
        ):
            raise InputError(f"delay_ms {delay!r} must be a number in [0, 600000)")
        return cls(mode, float(delay))


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0, so the peer sees a TCP reset (Toxiproxy's reset_peer)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def reset(self) -> None:
        _abort_with_rst(self.client)
        if self.upstream is not None:
            _abort_with_rst(self.upstream)
        for t in self.tasks:
            t.cancel()


class Link:
    """One direction between two regions: a listener that forwards to ``dst``'s API.

    Args:
        src: the region that connects.
        dst: the region connected to.
        port: the loopback port ``src`` connects to.
        upstream: ``(host, port)`` of ``dst``'s API.
        rtt_ms: the round-trip time between the regions; each direction adds half.
    """

    def __init__(
        self, src: str, dst: str, port: int, upstream: tuple[str, int], rtt_ms: float
    ) -> None:
        self.src, self.dst, self.port, self.upstream = src, dst, port, upstream
        self.rtt_ms = rtt_ms
        self.fault = LinkFault()
        self.conns: set[_Conn] = set()
        self.accepted = 0
        self.refused = 0
        self._server: asyncio.Server | None = None

    @property
    def name(self) -> str:
        """``src->dst``."""
        return f"{self.src}->{self.dst}"

    def one_way_s(self) -> float:
        """Seconds each chunk waits before it is forwarded."""
        return (self.rtt_ms / 2.0 + self.fault.delay_ms) / 1000.0

    async def start(self, host: str = "127.0.0.1") -> None:
        """Listen on ``port``."""
        self._server = await asyncio.start_server(self._handle, host, self.port, reuse_address=True)

    async def close(self) -> None:
        """Stop listening and reset every open connection."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for c in list(self.conns):
            c.reset()

    def set_fault(self, fault: LinkFault) -> None:
        """Apply ``fault``; ``reset`` and ``down`` reset the open connections at once."""
        self.fault = fault
        if fault.mode in ("reset", "down"):
            for c in list(self.conns):
                c.reset()
            self.conns.clear()

    def describe(self) -> dict[str, Any]:
        """The link as the control channel shows it."""
        return {
            "src": self.src,
            "dst": self.dst,
            "port": self.port,
            "upstream": f"{self.upstream[0]}:{self.upstream[1]}",
            "rtt_ms": self.rtt_ms,
            "mode": self.fault.mode,
            "delay_ms": self.fault.delay_ms,
            "connections": len(self.conns),
            "accepted": self.accepted,
            "refused": self.refused,
        }

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.fault.mode in ("down", "reset"):
            self.refused += 1
            _abort_with_rst(writer)
            return
        self.accepted += 1
        conn = _Conn(writer)
        self.conns.add(conn)
        try:
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.upstream), timeout=5.0
                )
            except (OSError, TimeoutError):
                _abort_with_rst(writer)  # the region behind the link is down
                return
            conn.upstream = up_writer
            conn.tasks = [
                asyncio.create_task(self._pump(reader, up_writer)),
                asyncio.create_task(self._pump(up_reader, writer)),
            ]
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            self.conns.discard(conn)
            for w in (writer, conn.upstream):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward one direction, each chunk after the link's one-way delay, in order."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.write_eof()
                    return
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self.fault.mode == "drop":
                    continue
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(_CHUNK)
                if self.fault.mode == "drop":
                    if not data:
                        break
                    continue
                queue.put_nowait((loop.time() + self.one_way_s(), data))
                if not data:
                    break
            await sender
        except (ConnectionError, OSError):
            sender.cancel()
        finally:
            if not sender.done():
                sender.cancel()


class FaultProxy:
    """Every link of a deployment, plus the control channel.

    Args:
        links: the links.
        control_port: the loopback port of the control channel.
        token: the bearer token the control channel requires.
    """

    def __init__(self, links: list[Link], control_port: int, token: str) -> None:
        self.links = {(lk.src, lk.dst): lk for lk in links}
        self.control_port = control_port
        self._token = token
        self._control: asyncio.Server | None = None
        self.stopped = asyncio.Event()

    async def start(self) -> None:
        """Open every link and the control channel."""
        for lk in self.links.values():
            await lk.start()
        self._control = await asyncio.start_server(
            self._serve_control, "127.0.0.1", self.control_port
        )

    async def close(self) -> None:
        """Close the control channel and every link."""
        if self._control is not None:
            self._control.close()
        for lk in self.links.values():
            await lk.close()

    def _link(self, src: str, dst: str) -> Link:
        lk = self.links.get((src, dst))
        if lk is None:
            names = sorted(f"{a}->{b}" for a, b in self.links)
            raise InputError(f"no link {src}->{dst}; links: {', '.join(names)}")
        return lk

    def partition(self, a: str, b: str) -> None:
        """Cut ``a`` and ``b`` apart (both directions down)."""
        if a == b:
            raise InputError(f"a partition names two different regions (got {a} twice)")
        self._link(a, b).set_fault(LinkFault("down"))
        self._link(b, a).set_fault(LinkFault("down"))

    def heal(self, a: str | None = None, b: str | None = None) -> None:
        """Clear the faults between ``a`` and ``b`` (every link when not given)."""
        if a is None and b is None:
            for lk in self.links.values():
                lk.set_fault(LinkFault())
            return
        if a is None or b is None:
            raise InputError("heal takes both regions a and b, or neither")
        self._link(a, b).set_fault(LinkFault())
        self._link(b, a).set_fault(LinkFault())

    # -- control channel --------------------------------------------------------------
    async def _serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            status, body = await self._control_request(reader)
        except Exception as exc:  # noqa: BLE001 - a bad control request must not stop the proxy
            status, body = 500, {"error": f"{type(exc).__name__}: {exc}"}
        payload = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.1 {status} {http.client.responses.get(status, '')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + payload
        )
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        writer.close()

    async def _control_request(self, reader: asyncio.StreamReader) -> tuple[int, Any]:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5.0)
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = [*lines[0].split(" "), "", ""][:3]
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
        }
        length = int(headers.get("content-length", "0") or 0)
        if length > _MAX_CONTROL_BODY:
            return 413, {"error": f"body of {length} bytes is over {_MAX_CONTROL_BODY}"}
        raw = await asyncio.wait_for(reader.readexactly(length), timeout=5.0) if length else b""
        if path == "/healthz":
            return 200, {"ok": True, "links": len(self.links)}
        auth = headers.get("authorization", "")
        if not hmac.compare_digest(auth.encode(), f"Bearer {self._token}".encode()):
            return 401, {
                "error": "missing or wrong bearer token; send Authorization: Bearer <DIR/token>"
            }
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            return 400, {"error": "the body is not JSON"}
        try:
            return self._dispatch(method, path, data)
        except InputError as exc:
            return 400, {"error": str(exc)}

    def _dispatch(self, method: str, path: str, data: Any) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if method == "GET" and parts == ["links"]:
            return 200, {"links": [lk.describe() for lk in self.links.values()]}
        if method == "POST" and len(parts) == 3 and parts[0] == "links":
            lk = self._link(parts[1], parts[2])
            lk.set_fault(LinkFault.parse(data))
            return 200, lk.describe()
        if method == "POST" and parts == ["partition"]:
            if not isinstance(data, dict) or not {"a", "b"} <= set(data):
                raise InputError('partition takes {"a": REGION, "b": REGION}')
            self.partition(str(data["a"]), str(data["b"]))
            return 200, {"partitioned": [data["a"], data["b"]]}
        if method == "POST" and parts == ["heal"]:
            if not isinstance(data, dict):
                raise InputError('heal takes {} or {"a": REGION, "b": REGION}')
            self.heal(data.get("a"), data.get("b"))
            return 200, {"healed": True}
        return 404, {
            "error": f"no route {method} {path}; see GET /links, POST /links/SRC/DST, "
            "POST /partition, POST /heal"
        }


class ProxyControl:
    """Client of the proxy's control channel.

    Args:
        port: the control port (``state.json``: ``proxy.control_port``).
        token: the deployment's bearer token.
        timeout_s: per-request timeout.
    """

    def __init__(self, port: int, token: str, timeout_s: float = 5.0) -> None:
        self.port, self._token, self.timeout_s = port, token, timeout_s

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = json.loads(resp.read() or b"{}")
        except (OSError, ValueError) as exc:
            raise BackendError(
                f"fault proxy control on 127.0.0.1:{self.port} is unreachable: "
                f"{exc}; is the deployment up (geoshard status)?"
            ) from None
        finally:
            conn.close()
        if resp.status != 200:
            raise InputError(f"fault proxy refused {method} {path}: {data.get('error', data)}")
        return data

    def links(self) -> list[dict[str, Any]]:
        """Every link with its mode, delay and open connections."""
        return list(self._call("GET", "/links")["links"])

    def set_link(
        self, src: str, dst: str, *, mode: str = "ok", delay_ms: float = 0.0
    ) -> dict[str, Any]:
        """Set the fault on the link ``src -> dst``."""
        return dict(self._call("POST", f"/links/{src}/{dst}", {"mode": mode, "delay_ms": delay_ms}))

    def partition(self, a: str, b: str) -> None:
        """Cut regions ``a`` and ``b`` apart."""
        self._call("POST", "/partition", {"a": a, "b": b})

    def heal(self, a: str | None = None, b: str | None = None) -> None:
        """Clear the faults between ``a`` and ``b``, or on every link."""
        self._call("POST", "/heal", {} if a is None else {"a": a, "b": b})

    def healthy(self) -> bool:
        """True when the proxy answers its health check."""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
            conn.request("GET", "/healthz")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False


def load_config(path: Path) -> tuple[list[Link], int, str]:
    """Read the links, control port and token file written by ``geoshard up``.

    Raises:
        ConfigError: a missing or malformed config.
    """
    try:
        cfg = json.loads(path.read_text())
        links = [
            Link(
                lk["src"],
                lk["dst"],
                int(lk["port"]),
                ("127.0.0.1", int(lk["upstream_port"])),
                float(lk["rtt_ms"]),
            )
            for lk in cfg["links"]
        ]
        token = Path(cfg["token_file"]).read_text().strip()
        return links, int(cfg["control_port"]), token
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"fault proxy config {path} is unusable: {exc}") from None


async def _serve(path: Path) -> None:
    links, control_port, token = load_config(path)
    proxy = FaultProxy(links, control_port, token)
    await proxy.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, proxy.stopped.set)
    print(
        f"{time.strftime('%H:%M:%S')} fault proxy: {len(links)} links, control on "
        f"127.0.0.1:{control_port}",
        flush=True,
    )
    await proxy.stopped.wait()
    await proxy.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m geoshard.cluster.proxy CONFIG.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m geoshard.cluster.proxy CONFIG.json", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(Path(args[0])))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
