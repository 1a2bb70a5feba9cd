"""Storage tiers (hot, vector, cold, catalog) behind small interfaces, and the caches.

* :mod:`geoshard.storage.base`: the tier interfaces, the backend registry
  (``BACKENDS``, ``build_backend``) and the checks every write makes first.
* :mod:`geoshard.storage.keylayout`: how a key is named in every backend.
* :mod:`geoshard.storage.retry`: retry with backoff, deciding on the error taxonomy's
  ``retryable`` flag.
* :mod:`geoshard.storage.cache`: the cache policies shared with the simulator.
"""
