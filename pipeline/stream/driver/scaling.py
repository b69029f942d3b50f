"""Autoscaling glue: carries out the moves of each autoscaling cloud pool
(:mod:`pipeline.stream.autoscale`). A new replica lands where Ray places it and serves once its
readiness call returns; one that leaves drains, then is killed; calls it still held then are
replayed elsewhere."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.stream.driver.dispatch import Dispatcher
from pipeline.stream.driver.state import DriverState, RemoteCalls, Replica, StepState


@dataclass(eq=False)
class PoolScaling:
    """Grows and shrinks the autoscaling cloud pools."""

    state: DriverState
    calls: RemoteCalls
    dispatcher: Dispatcher

    def tick(self, now: float) -> None:
        """Apply each pool's moves for ``now``."""
        for s in self.state.cloud:
            if s.pool is None:
                continue
            demand = s.running + len(s.queue) + len(s.replay)
            moves = s.pool.tick(now, now - self.state.t_start, demand, s.replicas, s.running)
            for r in moves.retire:
                rep = s.replicas[r]
                rep.state = "retired"
                self.calls.kill(rep.handle)
            for r in moves.drain:
                s.replicas[r].state, s.replicas[r].since = "draining", now
            for _ in range(moves.grow):
                self.start_replica(s, now)

    def start_replica(self, s: StepState, now: float) -> None:
        """A new replica of an autoscaling pool: created now, probed until it is ready."""
        st = self.state
        assert st.graph.spawn is not None
        r = len(s.replicas)
        handle = st.graph.spawn(s.cloud_index, r)
        rep = Replica(handle, None, state="starting", since=now)
        s.replicas.append(rep)
        st.replicas.append(rep)
        gs = st.graph.cloud[s.cloud_index]
        gs.handles.append(handle)  # so that the run's end stops it too
        gs.where.append({})
        for name in s.stages:
            st.stats[name].ensure(r + 1)
        self.dispatcher.probe(s, r)
