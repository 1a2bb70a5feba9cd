"""The Locust side of ``geoshard load``: the locustfile Locust runs in its own process.

:mod:`geoshard.cluster.loadtest.locustfile` imports ``locust``, which monkey-patches
the process (gevent); no library module imports it. ``geoshard load`` starts
``python -m locust -f <that file>`` in a subprocess, passes the run's configuration in
the file named by ``$GEOSHARD_LOAD_CONFIG`` and reads Locust's CSV files back.
"""
