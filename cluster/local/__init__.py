"""geoshard.cluster.local: run the topology's servers for real on one machine.

- :mod:`.redis_procs`: :class:`RedisServer` (standalone) and :class:`RedisClusterProcs`
  (N primaries x R replicas) on free loopback ports, with bounded waits and clean stops.
"""

from __future__ import annotations

from .redis_procs import RedisClusterProcs, RedisServer, find_free_port, redis_binary

__all__ = ["RedisClusterProcs", "RedisServer", "find_free_port", "redis_binary"]
