"""Multi-node placement: a Ray cluster with an `edge` node and a `cloud` node (one machine)."""

from __future__ import annotations

import sys

import pytest
import ray
import ray.cloudpickle
from ray.cluster_utils import Cluster
from tiny_stream import tiny_factory

from pipeline.stream.config import load_config
from splitstream.runner import run_pipeline

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

EDGE_SIDE = ("source", "head", "encoder", "transport")
CLOUD_SIDE = ("decoder", "tail", "sink")


@pytest.fixture(scope="module")
def edge_cloud():
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "include_dashboard": False,
            "object_store_memory": 128 * 1024 * 1024,
        },
    )
    edge = cluster.add_node(
        num_cpus=1, resources={"edge": 100}, object_store_memory=128 * 1024 * 1024
    )
    cloud = cluster.add_node(
        num_cpus=1, resources={"cloud": 100}, object_store_memory=128 * 1024 * 1024
    )
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield {"edge": edge.node_id, "cloud": cloud.node_id, "head": cluster.head_node.node_id}
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_each_stage_runs_on_its_intended_node(edge_cloud):
    cfg = load_config(
        None,
        [
            "model.name=tiny",
            "data.source=synthetic",
            "data.shape=[3,16,16]",
            "samples=48",
            "codec.kind=ours",
            "link.mode=real",
            "replicas.decoder=2",
            "fidelity.reference_samples=16",
        ],
        check_model=False,
    )
    rep = run_pipeline(cfg, progress=False, factory=tiny_factory)
    assert rep["delivered"] == 48 and rep["lost"] == 0 and rep["duplicated"] == 0
    assert len({edge_cloud["edge"], edge_cloud["cloud"], edge_cloud["head"]}) == 3
    for stage in EDGE_SIDE + CLOUD_SIDE:
        want = edge_cloud["edge"] if stage in EDGE_SIDE else edge_cloud["cloud"]
        placements = rep["stages"][stage]["placement"]
        assert placements, stage
        assert {p["node_id"] for p in placements} == {want}, stage
    assert len(rep["stages"]["decoder"]["placement"]) == 2
    assert rep["stages"]["decoder"]["samples"] == 48
    # real mode: no emulator books, but bytes are counted and goodput is measured at the receiver
    assert rep["link"] == {"mode": "real"} and rep["wire_bytes"] > 0
    assert rep["goodput_mbps"] > 0 and rep["goodput_scope"] == "receiver"


def test_missing_placement_resource_fails_before_actors_start(edge_cloud):
    cfg = load_config(
        None, ["model.name=tiny", "placement.cloud_resource=gpu_cloud"], check_model=False
    )
    with pytest.raises(RuntimeError, match="placement.cloud_resource"):
        run_pipeline(cfg, progress=False, factory=tiny_factory)
