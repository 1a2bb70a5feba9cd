"""Cutting one loopback address off from others with nftables (the node partition).

Every Redis Cluster node of a deployment has an address of its own on loopback
(:func:`geoshard.cluster.ports.node_address`), the source of its cluster-bus and
replication connections; its clients reach it from 127.0.0.1. A :class:`NodePartition`
loads one nftables table that drops every packet between the victim's address and its
peers' addresses, in both directions, at the input hook: the victim still answers its
clients but hears nothing from its cluster, the Jepsen "client on the minority side"
case (reliability-anchors §1.4, §3.3; netem is not in this kernel, nft is).

:meth:`NodePartition.heal` deletes the table; it is idempotent and also registered
with :mod:`atexit`, so a run that dies (or is interrupted) does not leave the rules.
Needs root and the ``nft`` binary (Debian package ``nftables``).

Examples:
    >>> cut = NodePartition("127.77.156.65", ["127.77.156.66"])   # doctest: +SKIP
    >>> cut.apply(); cut.heal()                                   # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Sequence

from geoshard.errors import BackendError

__all__ = ["NodePartition", "nft_available"]


def nft_available() -> str | None:
    """None when nftables can be used here, else why not (and what to do)."""
    if shutil.which("nft") is None:
        return "nft is not installed; apt-get install -y nftables"
    if os.geteuid() != 0:
        return "nft needs root; run the scenario as root"
    return None


def _loopback(ip: str) -> str:
    addr = ipaddress.ip_address(ip)
    if not addr.is_loopback:
        raise BackendError(f"{ip} is not a loopback address; chaos faults stay on loopback")
    return str(addr)


class NodePartition:
    """Drop all traffic between ``victim`` and ``peers`` (loopback addresses only).

    Args:
        victim: the address cut off.
        peers: the addresses it is cut off from.
        table: the nftables table name (one per partition).

    Raises:
        BackendError: an address is not on loopback, or no peer is given.
    """

    def __init__(self, victim: str, peers: Sequence[str], table: str | None = None) -> None:
        self.victim = _loopback(victim)
        self.peers = sorted({_loopback(p) for p in peers} - {self.victim})
        if not self.peers:
            raise BackendError(f"no peer to cut {victim} from")
        self.table = table or f"geoshard_chaos_{os.getpid()}"
        self.applied = False

    def rules(self) -> str:
        """The nftables script that :meth:`apply` loads."""
        peers = ", ".join(self.peers)
        return (
            f"table inet {self.table} {{\n"
            "  chain input {\n"
            "    type filter hook input priority 0; policy accept;\n"
            f"    ip saddr {self.victim} ip daddr {{ {peers} }} drop\n"
            f"    ip saddr {{ {peers} }} ip daddr {self.victim} drop\n"
            "  }\n"
            "}\n"
        )

    def apply(self) -> None:
        """Load the table.

        Raises:
            BackendError: nft is missing, not permitted, or refused the rules.
        """
        why = nft_available()
        if why is not None:
            raise BackendError(f"cannot partition a Redis node: {why}")
        atexit.register(self.heal)
        out = subprocess.run(
            ["nft", "-f", "-"],
            input=self.rules(),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if out.returncode != 0:
            raise BackendError(f"nft refused the partition rules: {out.stderr.strip()}")
        self.applied = True

    def heal(self) -> None:
        """Delete the table; does nothing when it is not there. Never raises."""
        if not self.applied:
            return
        try:
            subprocess.run(
                ["nft", "delete", "table", "inet", self.table],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return
        self.applied = False
