"""The locustfile of ``geoshard load`` (run by Locust in its own process; never import it).

Reads the JSON file named by ``$GEOSHARD_LOAD_CONFIG``::

    {"token": "...", "apis": {"eu-west": "http://127.0.0.1:5000", ...},
     "regions": {"eu-west": {"weight": 300, "jurisdiction": "eu"}, ...},
     "mix": {"feature_read": 0.5, "recommend": 0.3, "interaction_write": 0.2},
     "population": 2000, "zipf_users": 0.8, "items": 1000, "k": 20,
     "rate_per_user": 2.5, "seed": 0}

Each simulated user sends requests at ``rate_per_user`` per second (constant
throughput). A request enters a region chosen by the spec's peak rates (its home
region), for a user of that region's jurisdiction drawn from a Zipf law over
``population`` users, and is one of the spec's request types in the spec's mix. Requests
are named ``<type>/<region>`` so the CSV gives one row per type and region, as the
simulator's verdict judges them; a request the API refused for load (429 or 503) is
counted as failed under ``refused:<type>/<region>``, so the latency of refusals is
measured apart from that of admitted requests. Only loopback APIs are contacted.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import os
import random
import uuid
from typing import Any

from locust import FastHttpUser, constant_throughput, task

#: Answers that refuse load (with Retry-After): 429 full ingestion buffer, 503 overloaded
#: or no region able to serve now.
REFUSALS = (429, 503)
#: The prefix of the Locust rows of refused requests (``refused:<type>/<region>``; the
#: same constant as geoshard.cli.load's, kept here: this file imports only Locust).
REFUSED_PREFIX = "refused:"


@functools.cache
def config() -> dict[str, Any]:
    """The run's configuration (read once, when the first user starts)."""
    with open(os.environ["GEOSHARD_LOAD_CONFIG"], encoding="utf-8") as f:
        cfg: dict[str, Any] = json.load(f)
    regions = sorted(cfg["regions"])
    ops = sorted(k for k, w in cfg["mix"].items() if w > 0)
    n = max(1, int(cfg["population"]))
    cfg["_regions"] = regions
    cfg["_region_cum"] = list(itertools.accumulate(cfg["regions"][r]["weight"] for r in regions))
    cfg["_ops"] = ops
    cfg["_op_cum"] = list(itertools.accumulate(cfg["mix"][k] for k in ops))
    cfg["_zipf_cum"] = list(
        itertools.accumulate(1.0 / (rank ** cfg["zipf_users"]) for rank in range(1, n + 1))
    )
    return cfg


def _pick(cum: list[float], rng: random.Random) -> int:
    return bisect.bisect_left(cum, rng.random() * cum[-1])


class GeoUser(FastHttpUser):
    """One user of the spec's workload (see the module docstring)."""

    host = "http://127.0.0.1"

    def wait_time(self) -> float:
        """Constant throughput: ``rate_per_user`` requests per second."""
        return float(constant_throughput(float(config()["rate_per_user"]))(self))

    def on_start(self) -> None:
        """A random source per user and the bearer token."""
        cfg = config()
        self.rng = random.Random(f"{cfg['seed']}-{uuid.uuid4()}")
        self.auth = {"Authorization": f"Bearer {cfg['token']}"}

    @task
    def request(self) -> None:
        """One request of the mix, at a home region, for a Zipf-drawn user."""
        cfg = config()
        region = cfg["_regions"][_pick(cfg["_region_cum"], self.rng)]
        j = cfg["regions"][region]["jurisdiction"]
        user = f"{j}:{_pick(cfg['_zipf_cum'], self.rng)}"
        op = cfg["_ops"][_pick(cfg["_op_cum"], self.rng)]
        base = cfg["apis"][region]
        name = f"{op}/{region}"
        if op == "feature_read":
            ctx = self.client.get(
                f"{base}/v1/users/{user}/features",
                name=name,
                headers=self.auth,
                catch_response=True,
            )
        elif op == "recommend":
            ctx = self.client.get(
                f"{base}/v1/recommend/{user}?k={cfg['k']}",
                name=name,
                headers=self.auth,
                catch_response=True,
            )
        else:
            item = f"sku-{self.rng.randrange(max(1, int(cfg['items']))):07d}"
            ev = {"user_id": user, "item_id": item, "type": "click"}
            ctx = self.client.post(
                f"{base}/v1/interactions",
                json={"interactions": [ev]},
                name=name,
                headers=self.auth,
                catch_response=True,
            )
        with ctx as resp:
            if op == "feature_read" and resp.status_code == 404:
                resp.success()  # a user with no features: a correct answer
            elif resp.status_code in REFUSALS:
                # load shed by the API (admission control or a full ingestion buffer):
                # its own row, so its latency is measured apart from the admitted ones
                resp.request_meta["name"] = f"{REFUSED_PREFIX}{name}"
                resp.failure(f"refused {resp.status_code}")
