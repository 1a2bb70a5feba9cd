"""``geoshard chaos``: faults injected into a running local deployment under load, and
the invariants checked afterwards.

One concept per module:

* :mod:`~geoshard.cluster.chaos.ledger`: the acknowledged-write ledger and the set
  checker (Jepsen's ``set`` semantics: lost, unexpected, recovered); pure.
* :mod:`~geoshard.cluster.chaos.loadgen`: the bounded load generator (threads over
  ``http.client``) that writes unique keys and records every request.
* :mod:`~geoshard.cluster.chaos.faults`: the faults, each with ``inject`` and ``heal``.
* :mod:`~geoshard.cluster.chaos.audit`: reading the tiers back (durability) and the
  residency audit of every hot node, cache level, stream, Milvus collection and Parquet
  file.
* :mod:`~geoshard.cluster.chaos.timeline`: availability, P99 and failover time per
  phase, from the request samples; pure.
* :mod:`~geoshard.cluster.chaos.report`: the run directory (``result.json``, CSV, PNG,
  ``report.html``).
* :mod:`~geoshard.cluster.chaos.runner`: one scenario, start to verdict.
"""
