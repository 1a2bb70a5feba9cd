"""The API's admission control (cluster.api.app.Admission): a bound on the /v1 requests
one process serves at once, the next answered 503 at once.

A unit test of our own middleware around an inner ASGI app that holds its requests until
told to answer; the deployment-level overload figures come from ``geoshard load`` (see
the README).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

pytest.importorskip("fastapi")

from geoshard.cluster.api.app import Admission


class _Held:
    """An ASGI app that answers 200 only when released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.entered += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def _call(app: Any, path: str) -> tuple[int, dict[str, str], bytes]:
    scope = {"type": "http", "path": path, "method": "GET", "headers": []}
    out: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            out["status"] = msg["status"]
            out["headers"] = {k.decode(): v.decode() for k, v in msg["headers"]}
        else:
            out["body"] += msg.get("body", b"")

    await app(scope, receive, send)
    return out["status"], out["headers"], out["body"]


def test_the_request_over_the_bound_is_refused_at_once_and_the_slot_comes_back() -> None:
    async def scenario() -> None:
        inner = _Held()
        app = Admission(inner, region="eu-west", limit=3, retry_after_s=0.2)
        held = [asyncio.create_task(_call(app, f"/v1/users/eu:{i}/features")) for i in range(3)]
        while inner.entered < 3:
            await asyncio.sleep(0)
        assert app.inflight == 3
        t0 = time.perf_counter()
        status, headers, body = await _call(app, "/v1/recommend/eu:9")
        assert time.perf_counter() - t0 < 0.05
        assert status == 503
        assert headers["retry-after"] == "1"  # whole seconds, rounded up
        doc = json.loads(body)
        assert doc["code"] == "overloaded"
        assert "deploy.admission" in doc["error"] and "bound 3" in doc["error"]
        assert inner.entered == 3  # the refused request never reached the app
        # health and region-to-region routes are never refused for load
        probe = asyncio.create_task(_call(app, "/healthz"))
        internal = asyncio.create_task(_call(app, "/internal/v1/kv/x"))
        while inner.entered < 5:
            await asyncio.sleep(0)
        inner.release.set()
        results = await asyncio.gather(*held, probe, internal)
        assert [r[0] for r in results] == [200] * 5
        assert app.inflight == 0
        status, _h, _b = await _call(app, "/v1/users/eu:1/features")
        assert status == 200

    asyncio.run(scenario())


def test_a_failing_request_gives_its_slot_back() -> None:
    async def boom(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("handler crashed")

    async def scenario() -> None:
        app = Admission(boom, region="r1", limit=1, retry_after_s=1.0)
        for _ in range(3):
            with pytest.raises(RuntimeError):
                await _call(app, "/v1/items/sku-1")
            assert app.inflight == 0

    asyncio.run(scenario())


def test_the_spec_bound_is_validated() -> None:
    from pydantic import ValidationError

    from geoshard.spec import AdmissionSettings

    assert AdmissionSettings().max_inflight == 16
    with pytest.raises(ValidationError, match="max_inflight"):
        AdmissionSettings(max_inflight=0)


def test_a_late_event_loop_refuses_from_half_the_bound_in_flight() -> None:
    async def scenario() -> None:
        inner = _Held()
        # no sampler (lag 0 disables it): the lag is set by hand
        app = Admission(inner, region="r1", limit=2, retry_after_s=1.0, max_loop_lag_s=0.0)
        app.max_loop_lag_s = 0.005
        app._sampler = asyncio.create_task(asyncio.sleep(0))  # counts as started
        app.loop_lag_s = 0.050
        first = asyncio.create_task(_call(app, "/v1/items/sku-1"))
        while inner.entered < 1:
            await asyncio.sleep(0)
        # nothing was in flight, so the first was admitted despite the lag: progress
        status, _h, body = await _call(app, "/v1/items/sku-2")  # 1 of 2 in flight: busy
        assert status == 503 and b"50.0 ms late" in body
        app.loop_lag_s = 0.001
        second = asyncio.create_task(_call(app, "/v1/items/sku-3"))
        while inner.entered < 2:
            await asyncio.sleep(0)
        inner.release.set()
        assert [r[0] for r in await asyncio.gather(first, second)] == [200, 200]

    asyncio.run(scenario())


def test_the_sampler_measures_a_blocked_loop() -> None:
    async def scenario() -> None:
        app = Admission(_Held(), region="r1", limit=1, retry_after_s=1.0, sample_s=0.002)
        app._sampler = asyncio.create_task(app._sample_lag())
        await asyncio.sleep(0.01)
        time.sleep(0.05)  # block the loop, as a saturated process would
        for _ in range(3):  # the overdue sampler runs on the next turns of the loop
            await asyncio.sleep(0)
        # one 50 ms stall weighs a fifth in the smoothed lag: over a 5 ms bound, once
        assert 0.005 < app.loop_lag_s < 0.02
        app._sampler.cancel()

    asyncio.run(scenario())


def test_a_late_event_loop_alone_does_not_refuse_a_lightly_loaded_process() -> None:
    async def scenario() -> None:
        inner = _Held()
        app = Admission(inner, region="r1", limit=8, retry_after_s=1.0, max_loop_lag_s=0.0)
        app.max_loop_lag_s = 0.005
        app._sampler = asyncio.create_task(asyncio.sleep(0))
        app.loop_lag_s = 0.050  # the machine is busy, this process is not
        held = [asyncio.create_task(_call(app, f"/v1/items/sku-{i}")) for i in range(4)]
        while inner.entered < 4:
            await asyncio.sleep(0)
        status, _h, _b = await _call(app, "/v1/items/sku-9")  # 4 of 8 in flight: busy now
        assert status == 503
        inner.release.set()
        assert [r[0] for r in await asyncio.gather(*held)] == [200] * 4

    asyncio.run(scenario())


def test_a_request_waiting_on_another_region_gives_its_slot_back() -> None:
    from geoshard.cluster.admission import waiting_on_peer

    async def scenario() -> None:
        release = asyncio.Event()
        seen: list[int] = []

        async def forwarding(scope: Any, receive: Any, send: Any) -> None:
            # as a sync handler in anyio's worker thread, with the context copied
            def wait_on_peer() -> None:
                with waiting_on_peer():
                    seen.append(app.inflight)
                seen.append(app.inflight)

            await asyncio.to_thread(wait_on_peer)
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        app = Admission(forwarding, region="r1", limit=1, retry_after_s=1.0, max_loop_lag_s=0.0)
        first = asyncio.create_task(_call(app, "/v1/users/eu:1/features"))
        while len(seen) < 2:
            await asyncio.sleep(0.001)
        assert seen == [0, 1]  # not counted while it waited, counted again after
        release.set()
        assert (await first)[0] == 200 and app.inflight == 0

    asyncio.run(scenario())


def test_a_saturated_process_keeps_the_sustained_bound_and_a_burst_gets_the_larger() -> None:
    async def scenario() -> None:
        inner = _Held()
        app = Admission(
            inner, region="r1", limit=8, retry_after_s=1.0, max_loop_lag_s=0.0, sustained_limit=3
        )
        app.limiter.tau_s = 0.02
        # a burst into an idle process: up to the larger bound
        burst = [asyncio.create_task(_call(app, f"/v1/items/sku-{i}")) for i in range(8)]
        while inner.entered < 8:
            await asyncio.sleep(0)
        assert app.limit == 8
        # held for 5 time constants: the time-averaged count says saturated
        await asyncio.sleep(0.1)
        status, _h, body = await _call(app, "/v1/items/sku-x")
        assert app.limit == 3 and status == 503 and b"bound 3 of at most 8" in body
        inner.release.set()
        assert [r[0] for r in await asyncio.gather(*burst)] == [200] * 8
        # idle again for 5 time constants: the burst bound is back
        await asyncio.sleep(0.1)
        app.limiter.observe(app.inflight, time.monotonic())
        assert app.limit == 8
        statuses = await asyncio.gather(*(_call(app, f"/v1/items/s{i}") for i in range(8)))
        assert [s for s, _h, _b in statuses] == [200] * 8

    asyncio.run(scenario())


def test_the_adaptive_bounds_are_validated() -> None:
    from pydantic import ValidationError

    from geoshard.spec import AdmissionSettings

    a = AdmissionSettings()
    assert (a.sustained_inflight, a.max_inflight) == (8, 16)
    with pytest.raises(ValidationError, match="sustained_inflight \\(20\\) is above max_inflight"):
        AdmissionSettings(sustained_inflight=20)
    with pytest.raises(ValidationError, match="sustained_inflight"):
        AdmissionSettings(sustained_inflight=0)
