"""The Ray backend on a local Ray (``ray.init(num_cpus=2)``): the smoke benchmark gives bit-equal
per-run metrics to the local backend, a killed worker is retried, a raising run is reported.

Marked ``ray`` (deselected by default: starting Ray takes tens of seconds); ``pytest -m ray``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from l2t_bench import cli
from l2t_bench.backends import RayBackend
from l2t_bench.config import load_bench_config, plan_runs
from l2t_bench.records import FINAL_KEYS, read_runs
from l2t_bench.driver import run_bench

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")

TESTS = Path(__file__).resolve().parent
TINY = {
    "tasks": [{"name": "digits-mlp", "overrides": {"teaching_steps": 2}}],
    "seeds": [0],
    "device": "cpu",
    "imports": ["bench_fault_teachers"],
}
#: what must not differ between backends (wall times and timestamps may)
SAME = (*FINAL_KEYS, "best_val_acc", "auc_val_acc", "curves", "diverged", "student_steps", "teaching_steps", "agent", "key")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module; its workers find the test teachers through PYTHONPATH."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), old]))
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old


def _same_runs(a: list[dict], b: list[dict]) -> None:
    assert [r["key"] for r in a] == [r["key"] for r in b]
    for x, y in zip(a, b):
        assert {k: x[k] for k in SAME} == {k: y[k] for k in SAME}, x["key"]


def test_smoke_through_ray_is_bit_equal_to_local(tmp_path):
    """The smoke bench plus a pretrained entry (one episode, still learning on each seed)."""
    pytest.importorskip("stable_baselines3")
    import yaml

    from l2t_bench.config import resolve_config_path

    raw = yaml.safe_load(resolve_config_path("smoke").read_text())
    raw["teachers"].append({"name": "l2t-dln", "label": "l2t-dln-pre", "pretrain": {"seeds": [50], "episodes": 1, "online": True}})
    cfg = load_bench_config(raw)
    local = run_bench(cfg, tmp_path / "local", quiet=True)
    remote = run_bench(cfg, tmp_path / "ray", backend=RayBackend(), quiet=True)
    assert not local.failures and not remote.failures
    assert len(remote.records) == len(plan_runs(cfg))
    _same_runs(local.records, remote.records)
    written = {r["key"]: r for r in read_runs(tmp_path / "ray" / "runs.jsonl")}  # in the order the runs finished
    assert written == {r["key"]: r for r in remote.records}  # the driver wrote every run, once
    agents = sorted(p.name for p in (tmp_path / "ray" / "agents").iterdir())
    assert agents == sorted(p.name for p in (tmp_path / "local" / "agents").iterdir())
    assert {r["agent"] for r in remote.records} - {None} == {f"agents/{name}" for name in agents}  # trained and pretrained


def test_killed_worker_is_retried_and_the_bench_completes(tmp_path):
    marker = tmp_path / "killed-once"
    cfg = load_bench_config({**TINY, "teachers": ["ce", {"name": "test-sigkill-once", "kwargs": {"marker": str(marker)}}], "max_retries": 2})
    result = run_bench(cfg, tmp_path / "ray", backend=RayBackend(), quiet=True)
    assert marker.exists()  # the first attempt did kill its worker
    assert not result.failures
    assert sorted(r["teacher"] for r in read_runs(tmp_path / "ray" / "runs.jsonl")) == ["ce", "test-sigkill-once"]
    # the retried run is the run an undisturbed process gives (the marker is there now: no kill)
    local = run_bench(cfg, tmp_path / "local", quiet=True)
    _same_runs(local.records, result.records)


def test_worker_dying_past_max_retries_is_reported(tmp_path):
    marker = tmp_path / "killed-once"
    cfg = load_bench_config({**TINY, "teachers": ["ce", {"name": "test-sigkill-once", "kwargs": {"marker": str(marker)}}], "max_retries": 0})
    result = run_bench(cfg, tmp_path / "ray", backend=RayBackend(), quiet=True)
    assert [r["teacher"] for r in result.records] == ["ce"]
    [failure] = result.failures
    assert failure.run.teacher.name == "test-sigkill-once"
    assert "worker process died 1 time(s) (max_retries=0)" in failure.error


def test_raising_run_is_reported_and_the_others_finish(tmp_path, capsys):
    cfg_file = tmp_path / "bench.yaml"
    import yaml

    cfg_file.write_text(yaml.safe_dump({**TINY, "seeds": [0, 1], "teachers": ["test-raises", "ce"]}))
    out = tmp_path / "out"
    assert cli.main(["bench", "--config", str(cfg_file), "--out", str(out), "--backend", "ray"]) == 1
    text = capsys.readouterr().out
    assert sorted((r["teacher"], r["seed"]) for r in read_runs(out / "runs.jsonl")) == [("ce", 0), ("ce", 1)]
    failed = [line for line in text.splitlines() if line.startswith("  digits-mlp|test-raises|")]
    assert len(failed) == 2 and all("RuntimeError: test-raises: this teacher always fails" in line for line in failed)
    assert f"retry them (finished runs are kept): l2t bench --config {cfg_file} --out {out} --backend ray" in text
    import json

    details = {f["key"]: f["details"] for f in json.loads((out / "failed_runs.json").read_text())}
    assert len(details) == 2 and all("test-raises: this teacher always fails" in d and "act" in d for d in details.values())


def test_killed_worker_resumes_from_its_checkpoint(tmp_path):
    """checkpoint_every on Ray: the retried run continues from the killed attempt's checkpoint and
    ends with the record of an uninterrupted run."""
    marker = tmp_path / "killed-once"
    teacher = {"name": "test-sigkill-once", "kwargs": {"marker": str(marker), "kill_at": 3}}
    bench = {**TINY, "tasks": [{"name": "digits-mlp", "overrides": {"teaching_steps": 5}}], "teachers": [teacher], "checkpoint_every": 1}
    result = run_bench(load_bench_config(bench), tmp_path / "ray", backend=RayBackend(), quiet=True)
    assert marker.exists() and not result.failures
    acts = Path(f"{marker}.acts").read_text().split()
    assert acts == ["3", "4"]  # the retry started at teaching step 3, not 0
    assert not list((tmp_path / "ray" / "checkpoints").glob("*.pt"))  # removed when the run ended
    Path(f"{marker}.acts").unlink()
    local = run_bench(load_bench_config({**bench, "checkpoint_every": None}), tmp_path / "local", quiet=True)
    _same_runs(local.records, result.records)


def test_batched_sb3_group_waits_for_its_agent_and_resumes(tmp_path):
    """A trained teacher's seeds are one Ray task that waits for the agent task and gets its files;
    a failed training fails all its seeds; a rerun sends only the missing seeds, with the saved agent."""
    pytest.importorskip("stable_baselines3")
    bench = {
        **TINY,
        "seeds": [0, 1, 2],
        "train_seeds": [100],
        "train_timesteps": 4,
        "teachers": [
            {"name": "ppo", "kwargs": {"n_steps": 4, "batch_size": 4, "n_epochs": 1}},
            {"name": "ppo", "label": "bad", "kwargs": {"n_steps": 1, "batch_size": 4}},  # SB3 refuses n_steps * n_envs = 1
        ],
    }
    cfg = load_bench_config(bench)
    assert all(t.batched for t in cfg.teachers)
    out = tmp_path / "ray"
    first = run_bench(cfg, out, backend=RayBackend(), quiet=True)
    assert [(r["teacher"], r["seed"]) for r in first.records] == [("ppo", 0), ("ppo", 1), ("ppo", 2)]
    assert sorted((f.run.teacher.label, f.run.seed) for f in first.failures) == [("bad", 0), ("bad", 1), ("bad", 2)]
    assert all(f.error.startswith("preparing its agent failed: ") for f in first.failures)
    [agent] = (out / "agents").iterdir()
    assert {r["agent"] for r in first.records} == {f"agents/{agent.name}"}
    local = run_bench(load_bench_config({**bench, "teachers": bench["teachers"][:1]}), tmp_path / "local", quiet=True)
    _same_runs(local.records, first.records)

    lines = (out / "runs.jsonl").read_text().splitlines()
    (out / "runs.jsonl").write_text(lines[0] + "\n")  # two of the three seeds lost
    again = run_bench(load_bench_config({**bench, "teachers": bench["teachers"][:1]}), out, backend=RayBackend(), quiet=True)
    assert not again.failures and len((out / "runs.jsonl").read_text().splitlines()) == 3  # only the missing two ran
    assert [p.name for p in (out / "agents").iterdir()] == [agent.name]
    for x, y in zip(local.records, again.records):  # a smaller batch: the same to float32 rounding
        assert (x["key"], x["agent"]) == (y["key"], y["agent"])
        assert x["test_loss"] == pytest.approx(y["test_loss"], rel=1e-5)
