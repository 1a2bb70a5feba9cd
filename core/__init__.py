"""geoshard: plan, simulate, deploy and break a globally distributed, sharded data layer.

The root package lives in the repository's ``core/`` folder and installs as ``geoshard``;
the subpackages ``geoshard.cluster``, ``geoshard.shards``, ``geoshard.regions``,
``geoshard.storage``, ``geoshard.sim`` and ``geoshard.cli`` come from the root folders of
the same names.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from geoshard import native as _native

# the compiled simulator modules, or their sources when those changed (see native.py)
_native.install_guard()

try:
    __version__ = version("geoshard")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
