"""Storage tiers (hot, vector, cold, catalog) behind small interfaces, and the caches.

See :mod:`geoshard.storage.base` for the interfaces and the backend registry, and
:mod:`geoshard.storage.cache` for the cache policies shared with the simulator.
"""
