"""geoshard.cli: the ``geoshard`` command line, the top layer.

The folder ``cli/`` installs as ``geoshard.cli``; nothing below it imports it. The
console script ``geoshard`` calls :func:`main`; ``python -m geoshard.cli`` does the same.
"""

from __future__ import annotations

from geoshard.cli.app import app, main

__all__ = ["app", "main"]
