"""The checker can fail: with durable acknowledgement off (``storage.hot.durable_writes:
false``: plain acks, no ``WAIT``), a minority partition loses acknowledged writes, and
``geoshard chaos`` exits 1 naming them (reliability-anchors §1.4: the partitioned
primary keeps acknowledging until ``cluster-node-timeout`` while its replica is
promoted on the majority side)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fixtures_deploy import ChaosDeployment

from geoshard.cluster.chaos.partition import nft_available

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHAOS_SPEC_EXTRA = "storage:\n  hot: {durable_writes: false}\n"


def test_minority_partition_without_wait_loses_acknowledged_writes(
    chaos_deployment: ChaosDeployment, tmp_path: Path
) -> None:
    if nft_available() and not os.environ.get("CI"):
        pytest.skip(f"minority-partition needs nftables: {nft_available()}")
    code, doc, err = chaos_deployment.chaos(
        "minority-partition",
        tmp_path / "run",
        *("--duration", "14", "--rate", "100", "--seed", "3", "--region", "eu-west"),
    )
    assert code == 1, (doc, err[-3000:])
    lost = doc["acknowledged_writes_lost"]
    assert isinstance(lost, int) and lost > 0
    failures = doc["failures"]
    assert isinstance(failures, list)
    assert f"{lost} acknowledged writes lost, e.g. user_features:eu:" in failures[0]
    assert "acknowledged by eu-west" in failures[0]
    ledger = (tmp_path / "run" / "ledger.csv").read_text()
    assert ledger.count(",ok,eu-west,") > lost
