"""A free-port allocator for a local deployment: distinct loopback ports, handed out once.

``geoshard up`` needs dozens of ports (Redis nodes and their cluster buses, cache
servers, Milvus, one API per region, one proxy link per ordered pair of regions and the
proxy's control channel). :class:`PortAllocator` asks the OS for a free port (bind to
port 0), never hands the same port out twice, and for Redis Cluster nodes also checks
that the cluster-bus port (``port + 10000``) is free. A port can still be taken by
another process between allocation and use; the launcher then fails fast naming it.

Examples:
    >>> ports = PortAllocator()
    >>> a, b = ports.take("api"), ports.take("proxy")
    >>> a != b
    True
"""

from __future__ import annotations

import socket

from geoshard.cluster.local.redis_procs import CLUSTER_BUS_OFFSET, find_free_port
from geoshard.errors import BackendError

__all__ = ["PortAllocator", "port_is_listening"]


class PortAllocator:
    """Hands out free loopback ports, each at most once.

    Args:
        host: the loopback address the ports are for.

    Attributes:
        taken: ``port -> what it is for`` of every port handed out (bus ports included).
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.taken: dict[int, str] = {}

    def take(self, what: str, *, cluster_bus: bool = False) -> int:
        """A free port for ``what``; with ``cluster_bus``, ``port + 10000`` is free too.

        Raises:
            BackendError: no free port could be found.
        """
        port = find_free_port(self.host, cluster_bus=cluster_bus, exclude=list(self.taken))
        self.taken[port] = what
        if cluster_bus:
            self.taken[port + CLUSTER_BUS_OFFSET] = f"{what} (cluster bus)"
        return port

    def check_free(self, port: int, what: str) -> None:
        """Raise when ``port`` cannot be bound now (another process took it).

        Raises:
            BackendError: naming the port, what it was for and the fix.
        """
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((self.host, port))
            except OSError as exc:
                raise BackendError(
                    f"port {port} ({what}) on {self.host} is taken ({exc.strerror}); another "
                    "process grabbed it; run geoshard up again to pick fresh ports"
                ) from None


def port_is_listening(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
