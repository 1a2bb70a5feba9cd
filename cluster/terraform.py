"""Terraform variables from a spec: the bridge from the simulated topology to AWS.

``geoshard terraform SPEC --out terraform.tfvars.json`` writes what
``terraform/examples/global`` consumes: one entry per region (AWS region code,
jurisdiction, VPC range, ElastiCache shards and replicas sized from the hot tier's
memory, ECS task counts for the API and Milvus, cold-tier lifecycle) and, per
jurisdiction, the AWS regions where its personal data may be stored, taken from the
same residency policy the router and the simulator use.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from geoshard.errors import ConfigError
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import PERSONAL_CLASSES, Spec

__all__ = ["ELASTICACHE_NODE_TYPES", "node_type_for", "tfvars_from_spec"]

#: ElastiCache node types and their usable memory in GiB (AWS documentation), smallest first.
ELASTICACHE_NODE_TYPES: tuple[tuple[str, float], ...] = (
    ("cache.t4g.micro", 0.5),
    ("cache.t4g.small", 1.37),
    ("cache.t4g.medium", 3.09),
    ("cache.r7g.large", 13.07),
    ("cache.r7g.xlarge", 26.32),
    ("cache.r7g.2xlarge", 52.82),
    ("cache.r7g.4xlarge", 105.81),
    ("cache.r7g.8xlarge", 209.55),
    ("cache.r7g.12xlarge", 317.77),
    ("cache.r7g.16xlarge", 419.09),
)

#: AWS allows 1 to 500 shards and 0 to 5 replicas per shard in cluster mode.
_MAX_SHARDS, _MAX_REPLICAS = 500, 5


def node_type_for(memory_gb: float) -> str:
    """The smallest ElastiCache node type with at least ``memory_gb`` GiB.

    Raises:
        ConfigError: when no node type is large enough.
    """
    for name, gib in ELASTICACHE_NODE_TYPES:
        if gib >= memory_gb:
            return name
    biggest = ELASTICACHE_NODE_TYPES[-1]
    raise ConfigError(
        f"hot.memory_gb(={memory_gb}) is above the largest ElastiCache node "
        f"({biggest[0]}, {biggest[1]} GiB); add nodes with less memory each"
    )


def milvus_endpoint(uri: str, where: str) -> str:
    """The ``host:port`` the region module wants, from the spec's Milvus URI.

    ``https://milvus.internal:19530`` and ``milvus.internal:19530`` both give
    ``milvus.internal:19530``; an empty URI stays empty (standalone Milvus).

    Raises:
        ConfigError: a URI without a host or a port, naming ``where`` (the key path).
    """
    if not uri:
        return ""
    parts = urlsplit(uri if "://" in uri else f"//{uri}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ConfigError(
            f"{where}(={uri!r}) needs a host and a port, for example "
            "'https://milvus.internal:19530'"
        )
    return f"{parts.hostname}:{port}"


def tfvars_from_spec(
    spec: Spec, project: str | None = None, warnings: list[str] | None = None
) -> dict[str, Any]:
    """The ``terraform.tfvars.json`` document for ``spec``.

    Milvus: with ``warm.external_endpoint`` set, the region uses that Milvus (Distributed
    through its Helm chart, or managed) and the module creates no Milvus compute;
    without it the module runs Milvus standalone, which is exactly one task, so
    ``desired_count`` is 1 and a warning says that ``warm.nodes`` above 1 needs an
    external endpoint.

    Args:
        spec: the topology.
        project: name prefix of AWS resources (default ``geoshard-<spec name>``).
        warnings: when given, human-readable warnings are appended to it.

    Raises:
        ConfigError: a region that does not fit ElastiCache limits, or a Milvus endpoint
            without a host and port.
    """
    policy = ResidencyPolicy.from_spec(spec)
    regions: dict[str, Any] = {}
    for i, (name, r) in enumerate(spec.regions.items()):
        if r.hot.nodes > _MAX_SHARDS or r.hot.replicas > _MAX_REPLICAS:
            raise ConfigError(
                f"regions.{name}.hot: {r.hot.nodes} shards x {r.hot.replicas} replicas "
                f"is beyond ElastiCache ({_MAX_SHARDS} shards, {_MAX_REPLICAS} replicas)"
            )
        if not r.warm.external_endpoint and r.warm.nodes > 1 and warnings is not None:
            warnings.append(
                f"regions.{name}.warm: {r.warm.nodes} Milvus nodes but no "
                "external_endpoint; Terraform runs Milvus standalone (1 task). Set "
                "warm.external_endpoint to a Milvus Distributed endpoint to deploy it"
            )
        regions[name] = {
            "aws_region": r.cloud_region,
            "jurisdiction": r.jurisdiction,
            "vpc_cidr": f"10.{10 + i}.0.0/16",
            "azs": 3,
            "redis": {
                "num_shards": r.hot.nodes,
                "replicas_per_shard": r.hot.replicas,
                "node_type": node_type_for(r.hot.memory_gb),
            },
            "api": {"desired_count": r.api.servers, "cpu": 1024, "memory": 2048},
            "milvus": {
                "desired_count": r.warm.nodes if r.warm.external_endpoint else 1,
                "cpu": 4096,
                "memory": 16384,
                "external_endpoint": milvus_endpoint(
                    r.warm.external_endpoint, f"regions.{name}.warm.external_endpoint"
                ),
            },
            "cold": {"transition_ia_days": 30, "transition_glacier_days": 180},
        }
    jurisdictions: dict[str, list[str]] = {}
    for j in spec.jurisdictions:
        # the personal-data bucket holds every personal class: only regions allowed for all
        allowed = set(spec.regions)
        for dc in PERSONAL_CLASSES:
            allowed &= policy.allowed_regions(j, dc, "store")
        jurisdictions[j] = sorted(spec.regions[r].cloud_region for r in allowed)
    return {
        "project": project or f"geoshard-{spec.name}",
        "regions": regions,
        "jurisdictions": jurisdictions,
    }
