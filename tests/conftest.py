"""Shared pytest fixtures: one local Ray instance per test module, CUDA skipping, temp caches."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing or broken
        return False


def pytest_sessionfinish(session, exitstatus):
    """Shut down a Ray instance a test left running (its core worker's threads call into Python, which
    must not outlive the interpreter's teardown), and name the threads still alive: a thread left
    running into teardown is the usual cause of a crash after the summary line."""
    import sys
    import threading

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        print("\nRay was still running at the end of the tests: shut down", file=sys.__stderr__)
        ray.shutdown()
    alive = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if alive:
        names = ", ".join(f"{t.name}{' (daemon)' if t.daemon else ''}" for t in alive)
        print(f"\nthreads alive at the end of the tests: {names}", file=sys.__stderr__)


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def torch_one_thread():
    """Run a test with one torch thread (small models: threads only add contention on 2 cores)."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance shared by one test module (2 CPUs plus edge/cloud resources)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    from splitstream.runner import start_local_ray

    start_local_ray(num_cpus=2, object_store_mb=256)
    yield ray
    ray.shutdown()
