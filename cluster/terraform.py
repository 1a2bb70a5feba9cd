"""Terraform variables from a spec: the bridge from the simulated topology to AWS.

``geoshard terraform SPEC --out terraform.tfvars.json`` writes what
``terraform/examples/global`` consumes: one entry per region (AWS region code,
jurisdiction, VPC range, ElastiCache shards and replicas sized from the hot tier's
memory, ECS task counts for the API and Milvus, cold-tier lifecycle) and, per
jurisdiction, the AWS regions where its personal data may be stored, taken from the
same residency policy the router and the simulator use.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from geoshard.errors import ConfigError
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import PERSONAL_CLASSES, Spec

__all__ = [
    "ELASTICACHE_NODE_TYPES",
    "GLOBAL_ROOT_PROVIDERS",
    "node_type_for",
    "tfvars_from_spec",
    "tfvars_problems",
]

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

#: AWS allows 1 to 500 shards per cluster; the module asks for 1 to 5 replicas per shard
#: (Multi-AZ failover needs one).
_MAX_SHARDS, _MIN_REPLICAS, _MAX_REPLICAS = 500, 1, 5

# The validation rules of terraform/modules/region/variables.tf and
# terraform/examples/global/variables.tf, applied at generation time so that Terraform
# never rejects what `geoshard terraform` wrote (tests/unit/test_terraform_vars.py checks
# that these strings are the ones in the .tf files).
_PROJECT_RE = "^[a-z][a-z0-9-]{1,20}$"
_NAME_RE = "^[a-z][a-z0-9-]{1,20}$"
_JURISDICTION_RE = "^[a-z][a-z0-9-]{0,15}$"
_AWS_REGION_RE = "^[a-z]{2}(-gov)?-[a-z]+-[0-9]$"
_MILVUS_ENDPOINT_RE = "^[A-Za-z0-9.-]+:[0-9]{1,5}$"
_MAX_PROJECT_NAME = 40  # "${project}-${name}": the ElastiCache replication group id

#: terraform/examples/global has one aliased provider and module block per region name.
GLOBAL_ROOT_PROVIDERS: dict[str, str] = {
    "eu-west": "eu-west-1",
    "eu-central": "eu-central-1",
    "us-east": "us-east-1",
    "us-west": "us-west-2",
    "ap-southeast": "ap-southeast-1",
    "ap-northeast": "ap-northeast-1",
}


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
        if r.hot.nodes > _MAX_SHARDS or not _MIN_REPLICAS <= r.hot.replicas <= _MAX_REPLICAS:
            raise ConfigError(
                f"regions.{name}.hot: {r.hot.nodes} shards x {r.hot.replicas} "
                f"replicas is outside what the region module deploys (1 to "
                f"{_MAX_SHARDS} shards, {_MIN_REPLICAS} to {_MAX_REPLICAS} replicas "
                f"per shard: ElastiCache Multi-AZ failover needs a replica); "
                f"change regions.{name}.hot"
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
    data = {
        "project": project or f"geoshard-{spec.name}",
        "regions": regions,
        "jurisdictions": jurisdictions,
    }
    problems = tfvars_problems(data, project_from_flag=project is not None)
    if problems:
        raise ConfigError(
            "the Terraform variables would fail the validation of terraform/ "
            f"({len(problems)} problem(s)):\n" + "\n".join(f"  {p}" for p in problems)
        )
    return data


def tfvars_problems(data: dict[str, Any], project_from_flag: bool = True) -> list[str]:
    """What ``terraform plan`` of terraform/examples/global would reject in ``data``.

    One line per problem, naming the value, the rule and the fix. Empty when the module
    and the root accept the variables.
    """
    out: list[str] = []
    project = str(data["project"])
    flag = "--project" if project_from_flag else "--project (default geoshard-<spec name>)"
    if not re.match(_PROJECT_RE, project):
        out.append(
            f"{flag} '{project}': the project must be 2-21 characters of lower-case "
            f"letters, digits and '-', starting with a letter ({_PROJECT_RE}); e.g. "
            "--project geoshard-prod"
        )
    regions: dict[str, Any] = data["regions"]
    if len(regions) > 246:
        out.append(
            f"regions: {len(regions)} regions; the generator gives each a VPC "
            "10.<10+i>.0.0/16, so at most 246"
        )
    for name, r in regions.items():
        where = f"regions.{name}"
        if not re.match(_NAME_RE, name):
            out.append(
                f"{where}: the region name must be 2-21 characters of lower-case letters, "
                f"digits and '-' ({_NAME_RE}); rename the region in the spec"
            )
        elif len(f"{project}-{name}") > _MAX_PROJECT_NAME:
            out.append(
                f"{where}: '{project}-{name}' is {len(project) + 1 + len(name)} characters; "
                f"the region module allows at most {_MAX_PROJECT_NAME} (it is the "
                "ElastiCache replication group id): use a shorter --project"
            )
        if name not in GLOBAL_ROOT_PROVIDERS:
            out.append(
                f"{where}: terraform/examples/global has no provider for region '{name}' "
                f"(it has {', '.join(GLOBAL_ROOT_PROVIDERS)}); add a provider, a module "
                "block and the name in its variables.tf, or rename the region"
            )
        elif GLOBAL_ROOT_PROVIDERS[name] != r["aws_region"]:
            out.append(
                f"{where}.cloud_region: '{r['aws_region']}', but terraform/examples/global "
                f"wires '{name}' to {GLOBAL_ROOT_PROVIDERS[name]}; set cloud_region: "
                f"{GLOBAL_ROOT_PROVIDERS[name]}"
            )
        if not re.match(_AWS_REGION_RE, r["aws_region"]):
            out.append(
                f"{where}.cloud_region: '{r['aws_region']}' is not an AWS region code "
                f"({_AWS_REGION_RE}), e.g. eu-west-1"
            )
        if not re.match(_JURISDICTION_RE, r["jurisdiction"]):
            out.append(
                f"{where}.jurisdiction: '{r['jurisdiction']}' must be 1-16 characters of "
                f"lower-case letters, digits and '-' ({_JURISDICTION_RE}); rename it"
            )
        allowed = data["jurisdictions"].get(r["jurisdiction"], [])
        if r["aws_region"] not in allowed:
            out.append(
                f"{where}: the region stores personal data of '{r['jurisdiction']}' in "
                f"{r['aws_region']}, which the residency rules do not allow for every "
                f"personal class (allowed in all: {', '.join(allowed) or 'none'}); add "
                "the region to the jurisdiction's residency rules or move it"
            )
        endpoint = r["milvus"]["external_endpoint"]
        if endpoint and not re.match(_MILVUS_ENDPOINT_RE, endpoint):
            out.append(
                f"{where}.warm.external_endpoint: '{endpoint}' must become host:port "
                f"({_MILVUS_ENDPOINT_RE}); give a host of letters, digits, '.' and '-'"
            )
    return out
