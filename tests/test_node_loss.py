"""Node loss on a ``ray.cluster_utils.Cluster`` (one machine, several raylets): a cloud node, an edge
node, one node of a fleet, and the only cloud node, each removed while the stream runs.

Each test builds its own cluster (every test removes a node) and removes the node from a results
listener once some samples are settled, so "mid-run" does not depend on timing. Which node hosts which
actor is known before the run (edge ``i`` and cloud replica ``r`` are pinned to the ``i``-th / ``r``-th
node offering their resource, in node-id order) and checked afterwards in the report's placement.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import ray
import ray.cloudpickle
from ray.cluster_utils import Cluster
from tiny_stream import tiny_config, tiny_factory

from pipeline.stream.executor import StreamError
from pipeline.stream.output import read_results
from splitstream.runner import run_pipeline

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

STORE = 96 * 1024 * 1024


@contextlib.contextmanager
def cluster(
    edges: int, clouds: int, edge_room: float = 100
) -> Iterator[tuple[Cluster, list[Any], list[Any]]]:
    """A head node with no side resource, ``edges`` nodes offering ``edge`` (``edge_room`` of it) and
    ``clouds`` offering ``cloud``; yields the cluster and its edge and cloud nodes, each list in node-id order (the
    order the graph pins edges and cloud replicas in)."""
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "object_store_memory": STORE},
    )
    try:
        ed = [
            c.add_node(num_cpus=1, resources={"edge": edge_room}, object_store_memory=STORE)
            for _ in range(edges)
        ]
        cl = [
            c.add_node(num_cpus=1, resources={"cloud": 100}, object_store_memory=STORE)
            for _ in range(clouds)
        ]
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False)
        yield c, sorted(ed, key=lambda n: n.node_id), sorted(cl, key=lambda n: n.node_id)
    finally:
        ray.shutdown()
        c.shutdown()


class RemoveAfter:
    """A results listener that removes ``node`` from ``cluster`` once ``after`` samples (of edge
    ``edge``, or of any edge) have settled: mid-run, whatever the machine's speed."""

    def __init__(self, cluster: Cluster, node: Any, after: int, edge: int | None = None) -> None:
        self.cluster, self.node, self.after, self.edge = cluster, node, after, edge
        self.seen = 0
        self.removed_at: int | None = None  # samples settled (in all) when the node went
        self.total = 0
        self.t_removed: float | None = None
        self.hosted: list[str] = []  # classes of the alive actors on the node when it went

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        self.total += len(rows)
        self.seen += sum(1 for r in rows if self.edge is None or r.get("edge") == self.edge)
        if self.removed_at is None and self.seen >= self.after:
            self.removed_at = self.total
            self.hosted = actors_on(self.node.node_id)
            self.cluster.remove_node(self.node)
            self.t_removed = time.monotonic()


def actors_on(node_id: str) -> list[str]:
    """Class names of the alive actors on a node (from the GCS's actor table: no dashboard)."""
    table = ray._private.state.actors()
    return sorted(
        a["ActorClassName"]
        for a in table.values()
        if a["State"] == "ALIVE" and a["Address"]["NodeID"] == node_id
    )


def _stream(samples: int, out: str, *overrides: str):
    """A paced stream: long enough that a node removed after a fifth of it goes mid-run."""
    return tiny_config(
        f"samples={samples}",
        "data.rate_sps=60",
        "link.bandwidth_mbps=20",
        "batching.max_batch_size=8",
        "fidelity.reference_samples=0",
        f"output.path={out}",
        *overrides,
    )


def _output_ids(path: str) -> tuple[list[int], list[str]]:
    table = read_results(path)
    return table.column("id").to_pylist(), table.column("status").to_pylist()


def _nodes(rep: dict[str, Any], stage: str) -> set[str]:
    return {p["node_id"] for p in rep["stages"][stage]["placement"]}


def test_cloud_node_lost_replicas_restart_on_the_other(tmp_path):
    """1 edge, 2 cloud nodes (2 cloud replicas); cloud node of replica 0 removed mid-run. The stream
    goes on long after the removal (~9 s), so that the replica's restart, which the stream does not
    wait for (the other replica carries it), is seen before the end even on a loaded machine."""
    with cluster(1, 2) as (c, edges, clouds):
        out = str(tmp_path / "out.parquet")
        cfg = _stream(600, out, "replicas.decoder=2", "replicas.tail=2")
        remover = RemoveAfter(c, clouds[0], after=40)
        t0 = time.monotonic()
        rep = run_pipeline(cfg, progress=False, factory=tiny_factory, listeners=[remover])
        wall = time.monotonic() - t0
    assert remover.removed_at is not None and remover.removed_at < 600, "removed mid-run"
    assert remover.hosted == ["CloudNode"]  # cloud replica 0 ran there
    assert rep["status"] == "completed" and rep["error"] is None
    assert rep["delivered"] == 600 and rep["lost"] == 0 and rep["duplicated"] == 0
    ids, status = _output_ids(out)
    assert sorted(ids) == list(range(600)) and set(status) == {"delivered"}
    assert rep["restarts"] == 1 and rep["stages"]["tail"]["restarts"] == 1
    # both replicas now run on the surviving cloud node
    assert _nodes(rep, "tail") == {clouds[1].node_id}
    print(
        f"\ncloud node lost: wall {wall:.1f} s, restarts {rep['restarts']}, "
        f"replayed {rep['replayed_batches']}, removed at {remover.removed_at}"
    )


def test_edge_node_lost_edge_restarts_on_the_other_edge_node(tmp_path):
    """2 edge nodes, 1 cloud node; the node hosting the (only) edge's actors removed mid-run."""
    with cluster(2, 1) as (c, edges, clouds):
        out = str(tmp_path / "out.parquet")
        cfg = _stream(360, out)
        remover = RemoveAfter(c, edges[0], after=60)
        t0 = time.monotonic()
        rep = run_pipeline(cfg, progress=False, factory=tiny_factory, listeners=[remover])
        wall = time.monotonic() - t0
    assert remover.removed_at is not None and remover.removed_at < 360, "removed mid-run"
    assert remover.hosted == ["EdgeNode"]  # the running edge's actor ran there
    assert rep["status"] == "completed" and rep["error"] is None
    assert rep["delivered"] == 360 and rep["lost"] == 0 and rep["duplicated"] == 0
    ids, status = _output_ids(out)
    assert sorted(ids) == list(range(360)) and set(status) == {"delivered"}
    assert rep["restarts"] == 1 and rep["stages"]["source"]["restarts"] == 1
    assert _nodes(rep, "source") == {edges[1].node_id}  # it came back on the other edge node
    print(
        f"\nedge node lost: wall {wall:.1f} s, restarts {rep['restarts']}, "
        f"replayed {rep['replayed_batches']}, removed at {remover.removed_at}"
    )


def _fleet(out: str, *overrides: str):
    return _stream(120, out, "fleet.edges=4", "data.rate_sps=30", *overrides)


def test_fleet_edge_node_lost_edge_restarts_on_another_edge_node(tmp_path):
    """4 edges on 4 edge nodes, 1 cloud node; the node of edge 1 removed mid-run: its actor comes
    back on one of the other edge nodes and finishes its samples."""
    with cluster(4, 1) as (c, edges, clouds):
        out = str(tmp_path / "out.parquet")
        remover = RemoveAfter(c, edges[1], after=20, edge=1)
        t0 = time.monotonic()
        rep = run_pipeline(_fleet(out), progress=False, factory=tiny_factory, listeners=[remover])
        wall = time.monotonic() - t0
    print(
        f"\nfleet, spare room: wall {wall:.1f} s, restarts {rep['restarts']}, "
        f"replayed {rep['replayed_batches']}, removed at {remover.removed_at}"
    )
    assert remover.removed_at is not None and remover.removed_at < 480, "removed mid-run"
    assert remover.hosted == ["EdgeNode"]
    assert rep["status"] == "completed" and rep["error"] is None
    assert rep["delivered"] == 480 and rep["lost"] == 0 and rep["duplicated"] == 0
    assert rep["restarts"] == 1 and rep["unsettled_ids"] == []
    ids, status = _output_ids(out)
    assert sorted(ids) == list(range(480)) and set(status) == {"delivered"}
    moved = rep["edges"][1]["node"]["node_id"]
    assert moved != edges[1].node_id and moved in {n.node_id for n in edges}
    assert [e["delivered"] for e in rep["edges"]] == [120] * 4


def test_fleet_edge_node_lost_without_room_the_others_finish(tmp_path):
    """Each edge node has room for one edge (``edge: 1``, ``placement.resource_amount=1``): edge 1's
    actor cannot come back. The other edges finish; the run then fails naming the resource, edge 1
    and its unsettled ids, in the error, the report and (by their absence) the output."""
    with cluster(4, 1, edge_room=1) as (c, edges, clouds):
        out = str(tmp_path / "out.parquet")
        cfg = _fleet(out, "placement.resource_amount=1", "flow.restart_timeout_s=8")
        remover = RemoveAfter(c, edges[1], after=20, edge=1)
        t0 = time.monotonic()
        with pytest.raises(StreamError) as info:
            run_pipeline(cfg, progress=False, factory=tiny_factory, listeners=[remover])
        wall = time.monotonic() - t0
    exc = info.value
    print(f"\nfleet, no room: wall {wall:.1f} s; {exc.kind}: {exc}")
    assert remover.hosted == ["EdgeNode"]
    assert exc.kind == "restart_timeout" and "edge 1 given up" in str(exc)
    assert "placement.edge_resource" in str(exc)
    rep = exc.report
    assert rep["status"] == "failed" and rep["duplicated"] == 0
    per_edge = rep["edges"]
    assert [per_edge[e]["delivered"] for e in (0, 2, 3)] == [120] * 3  # the others finished
    lost = per_edge[1]["unsettled_ids"]
    assert per_edge[1]["lost"] > 0 and lost and rep["unsettled_ids"] == lost
    lost_ids = {i for a, b in lost for i in range(a, b + 1)}
    assert len(lost_ids) == per_edge[1]["lost"]
    ids, status = _output_ids(out)
    assert len(ids) == len(set(ids)) == rep["delivered"]
    assert set(ids) | lost_ids == set(range(480)) and not set(ids) & lost_ids


def test_only_cloud_node_lost_fails_naming_the_resource(tmp_path, monkeypatch, capsys):
    """1 edge, 1 cloud node; the cloud node removed mid-run: nothing can host the cloud side. Run
    through the CLI (with the tiny model patched in): exit 3 within the restart timeout, an error
    naming ``placement.cloud_resource``, and the partial report and output written."""
    import json

    from pipeline.stream import preflight as pf
    from splitstream import cli, runner

    out, report = str(tmp_path / "out.parquet"), tmp_path / "report.json"
    cfg = _stream(360, out, "flow.restart_timeout_s=10")
    real_preflight, real_run = pf.preflight, runner.run_pipeline
    with cluster(1, 1) as (c, edges, clouds):
        remover = RemoveAfter(c, clouds[0], after=60)
        monkeypatch.setattr(cli, "load_config", lambda *a, **k: cfg)
        monkeypatch.setattr(pf, "preflight", lambda cfg, *a, **k: real_preflight(cfg, tiny_factory))
        monkeypatch.setattr(
            runner, "run_pipeline", lambda *a, **k: real_run(*a, **k, listeners=[remover])
        )
        t0 = time.monotonic()
        code = cli.main(["run", "--no-progress", "--json", str(report)])
        ended = time.monotonic()
    err = capsys.readouterr().err
    assert remover.t_removed is not None, "removed mid-run"
    print(
        f"\nonly cloud lost: exit {code}, wall {ended - t0:.1f} s, after removal "
        f"{ended - remover.t_removed:.1f} s: {err.strip().splitlines()[-1]}"
    )
    assert remover.hosted == ["CloudNode"]
    assert code == cli.EXIT_STREAM_FAILED == 3
    assert "stream failed (restart_timeout)" in err and "placement.cloud_resource 'cloud'" in err
    assert ended - remover.t_removed < 10 + 8  # the restart timeout, and the reports' writing
    rep = json.loads(report.read_text())
    assert rep["status"] == "failed" and rep["error"]["kind"] == "restart_timeout"
    assert "placement.cloud_resource" in rep["error"]["message"]
    assert rep["delivered"] >= 60 and rep["delivered"] + rep["lost"] == 360
    ids, status = _output_ids(out)
    assert len(ids) == len(set(ids)) == rep["delivered"] and set(status) == {"delivered"}
    lost = {i for a, b in rep["unsettled_ids"] for i in range(a, b + 1)}
    assert set(ids) | lost == set(range(360)) and not set(ids) & lost
