"""`geoshard terraform`: the spec becomes Terraform variables without being rewritten."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geoshard.cli import app
from geoshard.cluster.terraform import milvus_endpoint, node_type_for, tfvars_from_spec
from geoshard.errors import ConfigError
from geoshard.spec import load_spec

REPO = Path(__file__).resolve().parents[2]


def test_global_spec_gives_six_regions_and_residency_lists() -> None:
    data = tfvars_from_spec(load_spec(REPO / "examples" / "global.yaml"))
    assert len(data["regions"]) == 6
    assert data["regions"]["eu-west"]["aws_region"] == "eu-west-1"
    assert data["regions"]["eu-west"]["redis"]["num_shards"] == 48
    assert data["jurisdictions"] == {
        "eu": ["eu-central-1", "eu-west-1"],
        "us": ["us-east-1", "us-west-2"],
        "apac": ["ap-northeast-1", "ap-southeast-1"],
    }
    cidrs = [r["vpc_cidr"] for r in data["regions"].values()]
    assert len(set(cidrs)) == len(cidrs)


def test_residency_rule_widens_the_bucket_regions() -> None:
    data = tfvars_from_spec(load_spec(REPO / "examples" / "local.yaml"))
    assert data["jurisdictions"]["us"] == ["eu-west-1", "us-east-1"]  # local.yaml's rule
    assert data["jurisdictions"]["eu"] == ["eu-central-1", "eu-west-1"]


@pytest.mark.parametrize(
    ("gib", "expected"),
    [
        (0.25, "cache.t4g.micro"),
        (13.07, "cache.r7g.large"),
        (52, "cache.r7g.2xlarge"),
        (400, "cache.r7g.16xlarge"),
    ],
)
def test_node_type_is_smallest_that_fits(gib: float, expected: str) -> None:
    assert node_type_for(gib) == expected


def test_node_type_too_big() -> None:
    with pytest.raises(
        ConfigError, match=r"hot\.memory_gb\(=1000\) is above the largest ElastiCache node"
    ):
        node_type_for(1000)


def test_cli_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "terraform.tfvars.json"
    res = CliRunner().invoke(
        app, ["terraform", str(REPO / "examples" / "global.yaml"), "--out", str(out)]
    )
    assert res.exit_code == 0, res.stderr
    assert json.loads(out.read_text())["project"] == "geoshard-global"


def test_committed_example_tfvars_is_what_the_spec_generates() -> None:
    example = REPO / "terraform" / "examples" / "global" / "terraform.example.tfvars.json"
    if not example.exists():
        pytest.fail(f"{example} is missing")
    committed = json.loads(example.read_text())
    generated = tfvars_from_spec(
        load_spec(REPO / "examples" / "global.yaml"), committed.get("project")
    )
    assert committed == generated, (
        "terraform.example.tfvars.json is stale: regenerate it with "
        "geoshard terraform examples/global.yaml --out ..."
    )


def test_milvus_standalone_is_one_task_and_warns() -> None:
    warnings: list[str] = []
    data = tfvars_from_spec(load_spec(REPO / "examples" / "global.yaml"), warnings=warnings)
    assert all(r["milvus"]["desired_count"] == 1 for r in data["regions"].values())
    assert len(warnings) == 6 and "external_endpoint" in warnings[0]


def test_milvus_external_endpoint_keeps_the_node_count() -> None:
    text = (
        (REPO / "examples" / "pair.yaml")
        .read_text()
        .replace(
            "    warm: {nodes: 2}\n",
            "    warm: {nodes: 2, external_endpoint: 'https://milvus.internal:19530'}\n",
            1,
        )
    )
    from geoshard.spec import parse_spec

    data = tfvars_from_spec(parse_spec(text))
    east = data["regions"]["us-east"]["milvus"]
    assert east == {
        "desired_count": 2,
        "cpu": 4096,
        "memory": 16384,
        "external_endpoint": "milvus.internal:19530",
    }  # the module's host:port
    assert data["regions"]["us-west"]["milvus"]["desired_count"] == 1
    assert data["regions"]["us-west"]["milvus"]["external_endpoint"] == ""


@pytest.mark.parametrize(
    ("uri", "want"),
    [
        ("https://milvus.internal:19530", "milvus.internal:19530"),
        ("milvus.eu-west-1.internal:19530", "milvus.eu-west-1.internal:19530"),
        ("", ""),
    ],
)
def test_milvus_uri_becomes_the_modules_host_port(uri: str, want: str) -> None:
    got = milvus_endpoint(uri, "regions.x.warm.external_endpoint")
    assert got == want
    # the same rule as terraform/modules/region/variables.tf (validation of var.milvus)
    assert got == "" or re.fullmatch(r"[A-Za-z0-9.-]+:[0-9]{1,5}", got)


@pytest.mark.parametrize(
    "uri",
    [
        "https://milvus.internal",
        "milvus.internal",
        "https://:19530",
        "https://milvus.internal:notaport",
    ],
)
def test_milvus_uri_without_host_and_port_is_a_config_error(uri: str) -> None:
    with pytest.raises(
        ConfigError,
        match=r"regions\.x\.warm\.external_endpoint\(=.*\) needs a "
        r"host and a port",
    ):
        milvus_endpoint(uri, "regions.x.warm.external_endpoint")


def test_generator_rules_are_the_modules_rules() -> None:
    """The regexes and limits the generator applies appear verbatim in the .tf validations."""
    import geoshard.cluster.terraform as tf

    region_vars = (REPO / "terraform" / "modules" / "region" / "variables.tf").read_text()
    root_vars = (REPO / "terraform" / "examples" / "global" / "variables.tf").read_text()
    providers = (REPO / "terraform" / "examples" / "global" / "providers.tf").read_text()
    for rule in (
        tf._PROJECT_RE,
        tf._NAME_RE,
        tf._JURISDICTION_RE,
        tf._AWS_REGION_RE,
        tf._MILVUS_ENDPOINT_RE,
    ):
        assert f'regex("{rule}"' in region_vars, rule
    assert f'length("${{var.project}}-${{var.name}}") <= {tf._MAX_PROJECT_NAME}' in region_vars
    assert f"var.redis.num_shards <= {tf._MAX_SHARDS}" in region_vars
    assert (
        f"var.redis.replicas_per_shard >= {tf._MIN_REPLICAS} && "
        f"var.redis.replicas_per_shard <= {tf._MAX_REPLICAS}"
    ) in region_vars
    known = re.search(r"contains\(\[([^\]]*)\], name\)", root_vars)
    assert known is not None
    assert re.findall(r'"([^"]+)"', known.group(1)) == list(tf.GLOBAL_ROOT_PROVIDERS)
    for name, code in tf.GLOBAL_ROOT_PROVIDERS.items():
        assert f'"{name}"' in root_vars and f'= "{code}"' in root_vars
        assert f'region = "{code}"' in providers


PAIR = (REPO / "examples" / "pair.yaml").read_text()


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (
            PAIR.replace("hot: {nodes: 4, replicas: 1,", "hot: {nodes: 4, replicas: 0,", 1),
            r"regions\.us-east\.hot: 4 shards x 0 replicas is outside what the region module deploys",
        ),
        (
            PAIR.replace("us-west", "us-north"),
            r"regions\.us-north: terraform/examples/global has no provider for region 'us-north'",
        ),
        (
            PAIR.replace("cloud_region: us-west-2", "cloud_region: us-west-1"),
            (
                r"regions\.us-west\.cloud_region: 'us-west-1', but terraform/examples/global wires 'us-west' "
                r"to us-west-2; set cloud_region: us-west-2"
            ),
        ),
    ],
    ids=["no replica", "no provider", "wrong provider region"],
)
def test_spec_the_module_would_reject_is_refused_at_generation(text: str, pattern: str) -> None:
    from geoshard.spec import parse_spec

    assert text != PAIR
    with pytest.raises(ConfigError, match=pattern):
        tfvars_from_spec(parse_spec(text))
