"""Fleets: N edge streams, each with its own source, models and link, feeding one shared cloud pool.
First on one node (`ray_local`), then on a `ray.cluster_utils.Cluster` with a node per edge."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import pytest
import ray
from ray.cluster_utils import Cluster
from tiny_stream import tiny_config, tiny_factory

from pipeline.stream.config import ConfigError, load_config
from splitstream.chaos import stage_processes
from splitstream.runner import run_pipeline


def test_every_edge_streams_its_own_ids_over_its_own_link(ray_local):
    cfg = tiny_config(
        "samples=120",
        "fleet.edges=3",
        "link.bandwidth_mbps=4",
        "fleet.links=[{bandwidth_mbps: 8}, {profile: 100mbit}]",  # edge 2 keeps the base link
        "batching.max_batch_size=16",
        "fidelity.reference_samples=8",
    )
    rep = run_pipeline(cfg, progress=False, factory=tiny_factory)
    assert rep["samples"] == 360 and rep["delivered"] == 360
    assert rep["lost"] == 0 and rep["duplicated"] == 0 and rep["unexpected"] == 0
    edges = rep["edges"]
    assert [e["edge"] for e in edges] == [0, 1, 2]
    assert [e["first_id"] for e in edges] == [0, 120, 240]  # ids unique across the fleet
    assert all(e["samples"] == 120 and e["delivered"] == 120 and e["lost"] == 0 for e in edges)
    assert [e["configured_mbps"] for e in edges] == [8.0, 100.0, 4.0]
    assert rep["link"]["configured_mbps"] == 112.0
    for e in edges:
        assert e["goodput_mbps"] > 0 and e["latency_p99_ms"] >= e["latency_p50_ms"] > 0
        assert e["node"]["pid"] > 0
    # one edge actor per edge (fused), three distinct processes
    assert len({e["node"]["pid"] for e in edges}) == 3
    assert rep["stages"]["head"]["replicas"] == 3 and rep["stages"]["head"]["samples"] == 360


def test_fleet_links_are_checked_before_ray_starts():
    with pytest.raises(ConfigError, match=r"fleet\.links: 3 entries for fleet\.edges=2"):
        load_config(None, ["fleet.edges=2", "fleet.links=[{}, {}, {}]"])
    with pytest.raises(ConfigError, match=r"fleet\.links\.1\.profile"):
        load_config(None, ["fleet.edges=2", "fleet.links=[{}, {profile: 6g}]"])
    with pytest.raises(ConfigError, match=r"fleet\.links\.0\.trace"):
        load_config(None, ["fleet.edges=2", "fleet.links=[{trace: /no/such.trace}]"])


@pytest.mark.slow
def test_eight_edges_at_2_mbit_each_fill_their_links(ray_local):
    cfg = tiny_config(
        "samples=200",
        "codec.kind=fp32",  # 8 KiB per sample: the links, not the two cores, are the bottleneck
        "fleet.edges=8",
        "link.bandwidth_mbps=2",
        "batching.max_batch_size=16",
        "fidelity.reference_samples=0",
    )
    rep = run_pipeline(cfg, progress=False, factory=tiny_factory)
    assert rep["delivered"] == 1600 and rep["lost"] == 0 and rep["duplicated"] == 0
    aggregate = rep["throughput_sps"] * rep["wire_bytes_per_sample"] * 8 / 1e6
    assert aggregate >= 0.90 * 16, aggregate
    for e in rep["edges"]:
        assert 0.85 <= e["link_utilization"] <= 1.05, e


@pytest.mark.slow
def test_32_edges_at_half_a_mbit_share_four_processes_and_fill_their_links(ray_local):
    cfg = tiny_config(
        "samples=60",
        "codec.kind=fp32",  # 8 KiB per sample: the links, not the two cores, are the bottleneck
        "fleet.edges=32",
        "fleet.edges_per_process=8",
        "link.bandwidth_mbps=0.5",
        "batching.max_batch_size=8",
        "fidelity.reference_samples=0",
    )
    rep = run_pipeline(cfg, progress=False, factory=tiny_factory)
    assert rep["delivered"] == 32 * 60 and rep["lost"] == 0 and rep["duplicated"] == 0
    assert len({e["node"]["pid"] for e in rep["edges"]}) == 4
    aggregate = rep["throughput_sps"] * rep["wire_bytes_per_sample"] * 8 / 1e6
    assert 0.90 * 16 <= aggregate <= 1.05 * 16, aggregate
    # each edge's goodput spans its first to its last arrival stamp, taken when the shared cloud
    # stage runs the call: 32 first batches arrive together and are stamped one after another, so
    # an edge stamped late by ~0.4 s of its ~8 s reads ~5 % high (1.054 in one CI run); the
    # aggregate above, over the whole run, bounds the links tightly
    for e in rep["edges"]:
        assert 0.85 <= e["link_utilization"] <= 1.10, e


def test_a_killed_shared_edge_process_costs_its_edges_a_replay(ray_local):
    """Two processes of two edges each; one is killed mid-run: both its edges come back with it and
    every sample of the fleet is delivered exactly once."""
    cfg = tiny_config(
        "samples=360", "fleet.edges=4", "fleet.edges_per_process=2", "link.bandwidth_mbps=2",
        "codec.kind=fp32", "batching.max_batch_size=8", "fidelity.reference_samples=0",
    )  # fmt: skip
    killed: list[int] = []

    def kill_one_host() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            hosts = stage_processes(classes=("EdgeHost",))
            if len(hosts) == 2 and stage_processes(classes=("CloudNode",)):
                time.sleep(5.0)  # mid-run: the links take about 12 s once every actor is up
                hosts = stage_processes(classes=("EdgeHost",))  # the ones alive now
                if hosts:
                    pid = hosts[0][1].pid
                    with contextlib.suppress(ProcessLookupError):  # gone since: look again
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
            time.sleep(0.1)

    killer = threading.Thread(target=kill_one_host, daemon=True)
    killer.start()
    rep = run_pipeline(cfg, progress=False, factory=tiny_factory)
    killer.join()
    assert killed, "no shared edge process was found to kill"
    assert rep["delivered"] == 1440 and rep["lost"] == 0 and rep["duplicated"] == 0
    driver = rep["driver"]  # each batch took three calls (make, send, cloud), probes more
    assert driver["calls"] >= 3 * rep["batch_sizes"]["batches"] and driver["cpu_s"] > 0
    assert driver["calls_per_s_per_edge"] == pytest.approx(driver["calls_per_s"] / 4)
    hit = [e for e in rep["edges"] if e["node"]["pid"] != killed[0] and e["restarts"] > 0]
    assert len(hit) == 2  # both edges of the killed process restarted, in a new process
    assert len({e["node"]["pid"] for e in hit}) == 1
    assert rep["restarts"] == 2


def test_edges_share_a_process_only_when_fused():
    with pytest.raises(ConfigError, match=r"fleet\.edges_per_process: .*placement\.fuse=true"):
        load_config(None, ["fleet.edges=4", "fleet.edges_per_process=2", "placement.fuse=false"])
    with pytest.raises(ConfigError, match=r"fleet\.edges_per_process"):
        load_config(None, ["fleet.edges_per_process=0"])


@pytest.fixture(scope="module")
def fleet_cluster():
    """A head with no CPUs, three edge nodes and two cloud nodes (one machine)."""
    if ray.is_initialized():
        ray.shutdown()
    mem = 96 * 1024 * 1024
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "object_store_memory": mem},
    )
    edges = [
        cluster.add_node(num_cpus=1, resources={"edge": 100}, object_store_memory=mem)
        for _ in range(3)
    ]
    clouds = [
        cluster.add_node(num_cpus=1, resources={"cloud": 100}, object_store_memory=mem)
        for _ in range(2)
    ]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield {"edge": {n.node_id for n in edges}, "cloud": {n.node_id for n in clouds}}
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "separate"])
def test_each_edge_and_cloud_replica_runs_on_its_own_node(fleet_cluster, fuse):
    cfg = tiny_config(
        f"placement.fuse={fuse}",
        "samples=48",
        "fleet.edges=3",
        "replicas.decoder=2",
        "replicas.tail=2",
        "link.profile=unlimited",
        "fidelity.reference_samples=0",
    )
    rep = run_pipeline(cfg, progress=False, factory=tiny_factory)
    assert rep["delivered"] == 144 and rep["lost"] == 0
    edge_nodes = [e["node"]["node_id"] for e in rep["edges"]]
    assert sorted(edge_nodes) == sorted(fleet_cluster["edge"])  # three edges, three nodes
    for stage in ("source", "head", "encoder", "transport"):
        nodes = [p["node_id"] for p in rep["stages"][stage]["placement"]]
        assert nodes == edge_nodes, stage  # every edge's stages on that edge's node
    for stage in ("decoder", "tail"):
        nodes = [p["node_id"] for p in rep["stages"][stage]["placement"]]
        assert sorted(nodes) == sorted(fleet_cluster["cloud"]), stage  # two replicas, two nodes
