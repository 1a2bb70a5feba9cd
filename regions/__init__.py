"""Geography and law: the network model and the residency policy."""

from __future__ import annotations

from geoshard.regions.network import NetworkModel, haversine_km
from geoshard.regions.residency import ResidencyDecision, ResidencyPolicy

__all__ = ["NetworkModel", "ResidencyDecision", "ResidencyPolicy", "haversine_km"]
