"""``python -m geoshard.cli``: the same as the ``geoshard`` console script."""

from __future__ import annotations

from geoshard.cli.app import main

if __name__ == "__main__":
    main()
