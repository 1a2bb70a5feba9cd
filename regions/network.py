"""The network model: round-trip times between regions.

By default RTT comes from the great-circle distance between region locations::

    rtt_ms = base_ms + 2 * distance_km * route_stretch / fiber_km_per_ms

* ``distance_km`` is the haversine distance on a sphere of radius 6,371.0088 km (the
  IUGG mean Earth radius);
* ``fiber_km_per_ms`` is the speed of light in fibre, about 200 km/ms (2/3 c);
* ``route_stretch`` is how much longer real cable paths are than the great circle
  (1.3 by default; published studies of internet paths find 1.2 to 2);
* ``base_ms`` is the fixed cost of a round trip (switching, queueing, TCP/TLS handling).

With the defaults Dublin -> Frankfurt is ~19 ms and Dublin -> Northern Virginia ~76 ms,
close to the 20-25 ms and 65-75 ms that cloud inter-region measurements report. A
measured ``network.matrix`` in the spec overrides the model for every pair. Inside one
region the RTT is ``intra_region_ms``.

Examples:
    >>> from geoshard.spec import load_spec
    >>> net = NetworkModel.from_spec(load_spec("examples/local.yaml"))  # doctest: +SKIP
    >>> round(net.rtt_ms("eu-west", "us-east"))                         # doctest: +SKIP
    76
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from geoshard.errors import ConfigError, did_you_mean
from geoshard.spec import Spec

__all__ = ["EARTH_RADIUS_KM", "NetworkModel", "haversine_km"]

#: IUGG mean Earth radius.
EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class NetworkModel:
    """RTTs between every pair of regions, precomputed.

    Attributes:
        regions: region names, in spec order.
        rtt: ``rtt[(a, b)]`` in ms for every ordered pair, ``intra_region_ms`` when a == b.
        client_ms: RTT from a client to the region it is closest to.
    """

    regions: tuple[str, ...]
    rtt: Mapping[tuple[str, str], float]
    client_ms: float

    @classmethod
    def from_spec(cls, spec: Spec) -> NetworkModel:
        """Build the model from a spec: the matrix when given, else the distance formula."""
        net = spec.network
        names = tuple(spec.regions)
        rtt: dict[tuple[str, str], float] = {}
        if net.matrix is not None:
            idx = {r: i for i, r in enumerate(net.matrix.regions)}
            for a in names:
                for b in names:
                    rtt[(a, b)] = (
                        net.intra_region_ms if a == b else float(net.matrix.ms[idx[a]][idx[b]])
                    )
        else:
            for a in names:
                la = spec.regions[a].location
                for b in names:
                    if a == b:
                        rtt[(a, b)] = net.intra_region_ms
                        continue
                    lb = spec.regions[b].location
                    d = haversine_km(la.lat, la.lon, lb.lat, lb.lon)
                    rtt[(a, b)] = net.base_ms + 2 * d * net.route_stretch / net.fiber_km_per_ms
        return cls(regions=names, rtt=rtt, client_ms=net.client_ms)

    def rtt_ms(self, a: str, b: str) -> float:
        """RTT in ms between regions ``a`` and ``b``.

        Raises:
            ConfigError: when a region is unknown.
        """
        try:
            return self.rtt[(a, b)]
        except KeyError:
            bad = a if a not in self.regions else b
            raise ConfigError(
                f"region '{bad}' is not in the spec{did_you_mean(bad, self.regions)}"
            ) from None

    def by_distance(self, origin: str, candidates: Iterable[str]) -> list[str]:
        """``candidates`` sorted by RTT from ``origin`` (ties broken by name, so deterministic)."""
        return sorted(candidates, key=lambda r: (self.rtt_ms(origin, r), r))

    def nearest(self, origin: str, candidates: Iterable[str]) -> str | None:
        """The candidate with the lowest RTT from ``origin``, or None when there is none."""
        ordered = self.by_distance(origin, candidates)
        return ordered[0] if ordered else None
