"""cluster.yaml must satisfy Ray's own cluster-launcher schema and our placement contract, and start
every node in secure mode (token authentication, TLS) from secrets kept outside the repository."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
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


# ---------------------------------------------------------------------- secure mode (README, "Security")
SECRETS_MOUNT = "~/splitstream-secrets"


def test_secure_mode_secrets_come_from_outside_the_repository(cluster):
    local = cluster["file_mounts"][SECRETS_MOUNT]
    assert local.startswith("~/") and not local.startswith("~/splitstream")
    text = CLUSTER_YAML.read_text()
    assert "BEGIN" not in text and "PRIVATE KEY" not in text  # no key material
    assert not re.search(r"\b[0-9a-f]{32,}\b", text)  # no token


def test_every_ray_start_is_secured_and_the_dashboard_stays_on_loopback(cluster):
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands")
              for c in cluster[key] if "ray start" in c]  # fmt: skip
    assert len(starts) == 2
    for command in starts:
        # the env file is sourced first, and a missing one stops the command (&&)
        assert command.startswith(f". {SECRETS_MOUNT}/node.env &&"), command
    head = next(c for c in starts if "--head" in c)
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head


def test_setup_commands_make_a_node_env_ray_accepts(cluster, tmp_path):
    """Run the launcher's own secure-mode setup lines in a scratch home: the laptop's
    `splitstream certs`, the file mount, then the node's commands, as a node's shell would."""
    home = tmp_path / "home"
    home.mkdir()
    laptop = tmp_path / "laptop-secrets"
    env = {**os.environ, "HOME": str(home)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for key in [k for k in env if k.startswith(("RAY_AUTH", "RAY_TLS", "RAY_USE_TLS"))]:
        del env[key]
    subprocess.run([sys.executable, "-m", "splitstream", "certs", str(laptop)], check=True, env=env,
                   capture_output=True, cwd=CLUSTER_YAML.parent)  # fmt: skip
    # the CA and the token alone: node certificates come from the nodes
    assert sorted(f.name for f in laptop.iterdir()) == ["ca.crt", "ca.key", "token"]
    shutil.copytree(laptop, home / "splitstream-secrets")  # what file_mounts does
    (home / "splitstream").symlink_to(CLUSTER_YAML.parent)
    node_lines = [c for c in cluster["setup_commands"] if "splitstream-secrets" in c]
    assert node_lines and any("pipeline certs" in c for c in node_lines)
    start = next(c for c in cluster["worker_start_ray_commands"] if "ray start" in c)
    script = "set -e\n" + "\n".join(node_lines) + "\n" + start.split("&&")[0] + "\nenv\n"
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    node_env = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    from splitstream.security import check_environment

    assert node_env["RAY_AUTH_MODE"] == "token" and node_env["RAY_USE_TLS"] == "1"
    assert check_environment(node_env) == []
    # the node's certificate names this machine's addresses, and the token is the laptop's
    ips = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    cert = (home / "splitstream-secrets" / "node.crt").read_bytes()
    from cryptography import x509

    sans = x509.load_pem_x509_certificate(cert).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value
    assert {str(v.value) for v in sans} >= {*ips, "127.0.0.1", "localhost"}
    assert Path(node_env["RAY_AUTH_TOKEN_PATH"]).read_text() == (laptop / "token").read_text()
