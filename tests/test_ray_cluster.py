"""The Ray backend on a simulated cluster (``ray.cluster_utils.Cluster``: a head with no CPU for
tasks and two worker nodes of one CPU each, as separate raylets on this machine): a bench spreads
over the nodes and every record names its node; a worker node removed in the middle of a bench
loses nothing (its runs are retried on the other node) and the records equal a local run's.

Marked ``ray`` (deselected by default); ``pytest -m ray tests/test_ray_cluster.py``.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from l2t_bench.backends import RayBackend
from l2t_bench.config import load_bench_config, plan_runs
from l2t_bench.records import FINAL_KEYS, read_runs
from l2t_bench.driver import run_bench

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

TESTS = Path(__file__).resolve().parent
TINY = {
    "tasks": [{"name": "digits-mlp", "overrides": {"teaching_steps": 2}}],
    "device": "cpu",
    "imports": ["bench_fault_teachers"],
    "batch_seeds": False,  # one task per run, so that runs can land on different nodes
}
#: what must not differ between a cluster run and a local one (wall times, timestamps and the node may)
SAME = (*FINAL_KEYS, "best_val_acc", "auc_val_acc", "curves", "diverged", "student_steps", "teaching_steps", "agent", "key")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head (no CPU for tasks: every run goes to a worker node) and two worker nodes of one CPU.
    The test teachers reach the workers as a user's own code would on a real cluster: the driver's
    ``runtime_env`` ships a folder holding their module (``working_dir``, put on the workers' path),
    not the nodes' environment. Node failures are noticed within ~2 s."""
    code = tmp_path_factory.mktemp("code")
    shutil.copy(TESTS / "bench_fault_teachers.py", code)
    c = cluster_utils.Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False,
                        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 4}},
    )
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, runtime_env={"working_dir": str(code)})
    try:
        yield c, workers
    finally:
        ray.shutdown()
        c.shutdown()


def _same_runs(a: list[dict], b: list[dict]) -> None:
    assert [r["key"] for r in a] == [r["key"] for r in b]
    for x, y in zip(a, b):
        assert {k: x[k] for k in SAME} == {k: y[k] for k in SAME}, x["key"]


def test_bench_spreads_over_the_nodes_and_each_record_names_its_node(cluster, tmp_path):
    c, workers = cluster
    folder = tmp_path / "started"
    folder.mkdir()
    # each run holds its node's only CPU for 2 s, so two runs at once must be on two nodes
    cfg = load_bench_config({**TINY, "seeds": [0, 1, 2, 3], "teachers": [{"name": "test-announces", "kwargs": {"folder": str(folder), "seconds": 2}}]})
    result = run_bench(cfg, tmp_path / "ray", backend=RayBackend(), quiet=True)
    assert not result.failures and len(result.records) == 4
    nodes = {w.node_id for w in workers}
    assert {r["node"]["id"] for r in result.records} == nodes  # both worker nodes ran runs, the head none
    assert all(r["node"]["host"] for r in result.records)
    written = read_runs(tmp_path / "ray" / "runs.jsonl")
    assert sorted((r["key"], r["node"]["id"]) for r in written) == sorted((r["key"], r["node"]["id"]) for r in result.records)
    local = run_bench(cfg, tmp_path / "local", quiet=True)
    _same_runs(local.records, result.records)
    assert all("node" not in r for r in local.records)  # in-process runs name no node


def test_worker_node_removed_mid_bench_loses_nothing(cluster, tmp_path):
    """A worker node is killed (its raylet and workers) while one of its runs sleeps in its first
    step; Ray retries that run on the other node, and the records equal a local run's."""
    c, workers = cluster
    folder = tmp_path / "started"
    folder.mkdir()
    bench = {**TINY, "seeds": [0, 1, 2, 3], "max_retries": 2,
             "teachers": ["ce", {"name": "test-announces", "kwargs": {"folder": str(folder), "seconds": 4}}]}
    cfg = load_bench_config(bench)
    victim = workers[0]
    out: dict = {}
    bench_thread = threading.Thread(target=lambda: out.update(result=run_bench(cfg, tmp_path / "ray", backend=RayBackend(), quiet=True)))
    bench_thread.start()
    deadline = time.monotonic() + 120
    while not any(p.read_text() == victim.node_id for p in folder.iterdir() if p.stat().st_size):
        assert time.monotonic() < deadline and bench_thread.is_alive(), "no run started on the node to remove"
        time.sleep(0.1)
    lost = sorted(p.name.split(".")[0] for p in folder.iterdir() if p.stat().st_size and p.read_text() == victim.node_id)
    c.remove_node(victim, allow_graceful=False)
    bench_thread.join(timeout=300)
    assert not bench_thread.is_alive()
    result = out["result"]
    assert not result.failures
    assert len(result.records) == len(plan_runs(cfg)) == 8
    survivor = workers[1].node_id
    for seed in lost:  # the run killed with its node started again, on the survivor, and finished there
        [record] = [r for r in result.records if r["teacher"] == "test-announces" and f"seed{r['seed']}" == seed]
        assert record["node"]["id"] == survivor
        assert any(p.read_text() == survivor for p in folder.glob(f"{seed}.*"))
    written = read_runs(tmp_path / "ray" / "runs.jsonl")
    assert len(written) == 8 and len((tmp_path / "ray" / "runs.jsonl").read_text().splitlines()) == 8  # none twice
    local = run_bench(cfg, tmp_path / "local", quiet=True)
    _same_runs(local.records, result.records)
    workers[0] = c.add_node(num_cpus=1)  # the cluster as it was, for any later test
    c.wait_for_nodes()
