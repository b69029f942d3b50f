"""cluster.yaml must satisfy Ray's own cluster-launcher schema and our placement contract."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parent.parent / "cluster.yaml"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def schema() -> dict:
    path = os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")
    with open(path) as f:
        return json.load(f)


def test_raw_file_matches_ray_schema(cluster, schema):
    jsonschema.validate(cluster, schema)


def test_filled_config_passes_ray_validate_config(cluster):
    # what `ray up` does: merge the provider defaults, then validate
    full = prepare_config(copy.deepcopy(cluster))
    validate_config(full)
    assert full["head_node_type"] in full["available_node_types"]


def test_schema_check_is_not_vacuous(cluster, schema):
    bad = copy.deepcopy(cluster)
    bad["available_node_types"]["edge_cpu"]["resourcez"] = {"edge": 1}
    with pytest.raises(jsonschema.ValidationError, match="resourcez"):
        jsonschema.validate(bad, schema)
    bad = copy.deepcopy(cluster)
    bad["head_node_type"] = "missing"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(bad))


def test_node_types_carry_edge_and_cloud_resources(cluster):
    types = cluster["available_node_types"]
    edge = [n for n, t in types.items() if t["resources"].get("edge", 0) > 0]
    cloud = [n for n, t in types.items() if t["resources"].get("cloud", 0) > 0]
    assert edge and cloud and not set(edge) & set(cloud)
    # the cloud side has a GPU for the GPU codec path; at least one edge node starts
    assert any(types[n]["resources"].get("GPU", 0) >= 1 for n in cloud)
    assert (
        sum(types[n].get("min_workers", 0) for n in edge) >= 1 or cluster["head_node_type"] in edge
    )


def test_placement_defaults_match_cluster_resources(cluster):
    from pipeline.stream.config import PipelineConfig

    placement = PipelineConfig().placement
    resources = set()
    for t in cluster["available_node_types"].values():
        resources |= set(t["resources"])
    assert placement.edge_resource in resources
    assert placement.cloud_resource in resources


def test_setup_installs_project_with_constraints(cluster):
    setup = " ".join(cluster["setup_commands"])
    assert "constraints.txt" in setup and "pip install" in setup
    assert "." in cluster["file_mounts"].values()
    assert (CLUSTER_YAML.parent / "constraints.txt").is_file()
