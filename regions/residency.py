"""The residency policy: where each jurisdiction's data may be stored and processed.

Personal data classes (user features, user embeddings, interactions, sessions) of a user
whose home is jurisdiction J may only be stored and processed in the regions J allows:
by default J's own regions; a rule in the spec can replace that set for some classes.
Non-personal classes (item catalog, item embeddings, aggregates) may live anywhere.

The policy is pure data: the simulator and every real write path call the same
:meth:`ResidencyPolicy.check` before anything is written, and :meth:`explain` prints
the effective map for audits.

Examples:
    >>> from geoshard.spec import load_spec
    >>> pol = ResidencyPolicy.from_spec(load_spec("examples/local.yaml"))  # doctest: +SKIP
    >>> sorted(pol.allowed_regions("eu", "interactions"))                  # doctest: +SKIP
    ['eu-central', 'eu-west']
    >>> pol.check("eu", "interactions", "us-east")                         # doctest: +SKIP
    Traceback (most recent call last):
    ResidencyError: ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from geoshard.errors import ConfigError, ResidencyError, did_you_mean
from geoshard.spec import DATA_CLASSES, NON_PERSONAL_CLASSES, PERSONAL_CLASSES, Spec

__all__ = ["Purpose", "ResidencyDecision", "ResidencyPolicy"]

Purpose = Literal["store", "process"]


@dataclass(frozen=True)
class ResidencyDecision:
    """One line of the audit map: where a jurisdiction's data class may be stored/processed."""

    jurisdiction: str
    data_class: str
    personal: bool
    store_in: tuple[str, ...]
    process_in: tuple[str, ...]
    source: str  # "default (home regions)", "rule 0", or "non-personal: any region"


class ResidencyPolicy:
    """Which regions may store or process each jurisdiction's data classes.

    Args:
        regions: every region name in the topology.
        decisions: the effective decision per (jurisdiction, data class).
    """

    def __init__(
        self, regions: Iterable[str], decisions: Mapping[tuple[str, str], ResidencyDecision]
    ) -> None:
        self._regions = tuple(regions)
        self._decisions = dict(decisions)
        self._jurisdictions = tuple(sorted({j for j, _ in self._decisions}))
        self._store = {k: frozenset(d.store_in) for k, d in self._decisions.items()}
        self._process = {k: frozenset(d.process_in) for k, d in self._decisions.items()}

    @classmethod
    def from_spec(cls, spec: Spec) -> ResidencyPolicy:
        """Build the effective policy: home-only by default, rules replace it per class."""
        all_regions = tuple(spec.regions)
        decisions: dict[tuple[str, str], ResidencyDecision] = {}
        for j in spec.jurisdictions:
            home = tuple(spec.jurisdiction_regions(j))
            for dc in DATA_CLASSES:
                if dc in NON_PERSONAL_CLASSES:
                    decisions[(j, dc)] = ResidencyDecision(
                        j, dc, False, all_regions, all_regions, "non-personal: any region"
                    )
                    continue
                store, process, source = home, home, "default (home regions)"
                for i, rule in enumerate(spec.residency.rules):
                    if rule.jurisdiction == j and dc in rule.data_classes:
                        store = tuple(sorted(rule.store_in))
                        process = tuple(sorted(rule.process_in or rule.store_in))
                        source = f"rule {i}"
                decisions[(j, dc)] = ResidencyDecision(j, dc, True, store, process, source)
        return cls(all_regions, decisions)

    @property
    def jurisdictions(self) -> tuple[str, ...]:
        """Every jurisdiction the policy knows, sorted."""
        return self._jurisdictions

    def _key(self, jurisdiction: str, data_class: str) -> tuple[str, str]:
        if jurisdiction not in self._jurisdictions:
            raise ConfigError(
                f"jurisdiction '{jurisdiction}' is not in the spec"
                f"{did_you_mean(jurisdiction, self._jurisdictions)}"
                f" (known: {', '.join(self._jurisdictions)})"
            )
        if data_class not in DATA_CLASSES:
            raise ConfigError(
                f"data class '{data_class}' is unknown{did_you_mean(data_class, DATA_CLASSES)}"
                f" (known: {', '.join(DATA_CLASSES)})"
            )
        return (jurisdiction, data_class)

    def _check_region(self, region: str) -> None:
        if region not in self._regions:
            raise ConfigError(
                f"region '{region}' is not in the spec{did_you_mean(region, self._regions)}"
            )

    def allowed_regions(
        self, jurisdiction: str, data_class: str, purpose: Purpose = "store"
    ) -> frozenset[str]:
        """Regions where ``jurisdiction``'s ``data_class`` may be stored (or processed).

        Raises:
            ConfigError: for an unknown jurisdiction or data class.
        """
        key = self._key(jurisdiction, data_class)
        return (self._store if purpose == "store" else self._process)[key]

    def is_allowed(
        self, jurisdiction: str, data_class: str, region: str, purpose: Purpose = "store"
    ) -> bool:
        """True when ``region`` may store (or process) that data."""
        self._check_region(region)
        return region in self.allowed_regions(jurisdiction, data_class, purpose)

    def check(
        self, jurisdiction: str, data_class: str, region: str, purpose: Purpose = "store"
    ) -> None:
        """Raise :class:`ResidencyError` unless ``region`` may store (or process) that data.

        Call it before every write or processing step of personal data; nothing must be
        written when it raises.
        """
        if not self.is_allowed(jurisdiction, data_class, region, purpose):
            allowed = sorted(self.allowed_regions(jurisdiction, data_class, purpose))
            verb = "stored" if purpose == "store" else "processed"
            raise ResidencyError(
                f"residency: {jurisdiction} {data_class} may not be {verb} in '{region}'; "
                f"allowed: {', '.join(allowed) or 'none'}. Route it to an allowed region "
                f"(nothing was written)"
            )

    def explain(self, jurisdiction: str | None = None) -> list[ResidencyDecision]:
        """The effective decisions, for audits: one per (jurisdiction, data class)."""
        if jurisdiction is not None:
            self._key(jurisdiction, PERSONAL_CLASSES[0])
        return [
            d
            for (j, _), d in sorted(self._decisions.items())
            if jurisdiction is None or j == jurisdiction
        ]
