"""Benchmark backends without Ray: a raising run is reported and the others finish, the retry command,
the line per run without a terminal, and the config keys of the backends (resources, imports, max_retries)."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from l2t_bench import cli
from l2t_bench.backends import LocalBackend, import_ray, make_backend
from l2t_bench.config import load_bench_config
from l2t_bench.records import read_runs
from l2t_bench.driver import run_bench

TINY = {
    "tasks": [{"name": "digits-mlp", "overrides": {"teaching_steps": 2}}],
    "seeds": [0, 1],
    "device": "cpu",
    "imports": ["bench_fault_teachers"],
}


def _write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_raising_run_is_reported_and_the_others_finish(tmp_path, capsys):
    cfg = _write(tmp_path, {**TINY, "teachers": ["test-raises", "ce"]})
    out = tmp_path / "out"
    assert cli.main(["bench", "--config", str(cfg), "--out", str(out)]) == 1
    text = capsys.readouterr().out
    records = read_runs(out / "runs.jsonl")
    assert sorted((r["teacher"], r["seed"]) for r in records) == [("ce", 0), ("ce", 1)]
    plan_keys = [line for line in text.splitlines() if line.startswith("  digits-mlp|test-raises|")]
    assert len(plan_keys) == 2 and all("RuntimeError: test-raises: this teacher always fails" in k for k in plan_keys)
    assert "2 run(s) failed" in text
    retry = f"l2t bench --config {cfg} --out {out}"
    assert f"retry them (finished runs are kept): {retry}" in text
    assert (out / "summary.csv").is_file()  # the finished runs are summarised
    failed = json.loads((out / "failed_runs.json").read_text())
    assert [f["key"] for f in failed] == [line.split(":")[0].strip() for line in plan_keys]
    assert all("Traceback" in f["details"] and "in act" in f["details"] for f in failed)

    # the retry command resumes: the finished runs are kept, only the failed ones run again
    before = (out / "runs.jsonl").read_text()
    assert cli.main(["bench", "--config", str(cfg), "--out", str(out)]) == 1
    assert (out / "runs.jsonl").read_text() == before
    assert "2 already in" in capsys.readouterr().out


def test_one_line_per_finished_run_without_a_terminal(tmp_path):
    cfg = load_bench_config({**TINY, "teachers": ["ce", "test-raises"]})
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    result = run_bench(cfg, tmp_path / "out", console=console)
    lines = buffer.getvalue().splitlines()
    runs = [line for line in lines if line.startswith("[")]
    assert [line.split("]")[0] for line in runs] == ["[1/4", "[2/4", "[3/4", "[4/4"]
    assert "digits-mlp · ce · seed 0: test_acc" in runs[0] and "digits-mlp · ce · seed 1: test_acc" in runs[1]
    assert all("FAILED RuntimeError: test-raises" in line for line in runs[2:])
    assert "\r" not in buffer.getvalue() and "\x1b" not in buffer.getvalue()  # no bar, no escape codes
    assert [f.run.seed for f in result.failures] == [0, 1] and len(result.records) == 2

    # resumed: the count starts after the finished runs; --quiet prints no run lines
    buffer.truncate(0), buffer.seek(0)
    run_bench(cfg, tmp_path / "out", console=console)
    assert [line.split("]")[0] for line in buffer.getvalue().splitlines() if line.startswith("[")] == ["[3/4", "[4/4"]
    buffer.truncate(0), buffer.seek(0)
    run_bench(cfg, tmp_path / "out", console=console, quiet=True)
    assert not [line for line in buffer.getvalue().splitlines() if line.startswith("[")]


@pytest.mark.parametrize("batch_seeds", [True, False])
def test_a_failed_training_fails_its_runs_once(tmp_path, monkeypatch, batch_seeds):
    """Whether the seeds run batched (one vector env) or one by one."""
    pytest.importorskip("stable_baselines3")
    import l2t_agents.sb3_teachers as sb3

    calls = []

    def broken_train(self, *args, **kwargs):
        calls.append(1)
        raise RuntimeError("no GPU left")

    monkeypatch.setattr(sb3.SB3Teacher, "train", broken_train)
    cfg = load_bench_config({**TINY, "teachers": ["ce", "ppo"], "train_seeds": [100], "batch_seeds": batch_seeds})
    assert cfg.batches(cfg.teachers[1]) == batch_seeds
    result = run_bench(cfg, tmp_path / "out")
    assert len(calls) == 1  # not once per seed
    assert [(f.run.teacher.label, f.run.seed) for f in result.failures] == [("ppo", 0), ("ppo", 1)]
    assert all(f.error == "preparing its agent failed: RuntimeError: no GPU left" for f in result.failures)
    assert [r["teacher"] for r in result.records] == ["ce", "ce"]


def test_resources_per_run(tmp_path):
    cfg = load_bench_config({
        **TINY,
        "resources": {"num_cpus": 2},
        "tasks": [{"name": "digits-mlp", "overrides": {"teaching_steps": 2}, "resources": {"num_gpus": 0.5}}],
        "teachers": ["ce", {"name": "hypergrad", "resources": {"num_gpus": 0.25, "num_cpus": 1}}],
        "max_retries": 5,
    })
    from l2t_bench.config import plan_runs

    by_teacher = {r.teacher.label: cfg.run_resources(r) for r in plan_runs(cfg)}
    assert by_teacher == {"ce": {"num_cpus": 2, "num_gpus": 0.5}, "hypergrad": {"num_cpus": 1, "num_gpus": 0.25}}
    assert cfg.max_retries == 5
    # where a run executes does not change its key: resumable across backends and resource settings
    plain = load_bench_config({**TINY, "teachers": ["ce", "hypergrad"]})
    assert [r.key for r in plan_runs(cfg)] == [r.key for r in plan_runs(plain)]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"resources": {"num_gpu": 1}}, r"resources: unknown key\(s\) \['num_gpu'\]; valid: \['num_cpus', 'num_gpus'\]"),
        ({"resources": {"num_gpus": -0.5}}, r"resources: num_gpus=-0.5, expected a number >= 0"),
        ({"teachers": [{"name": "ce", "resources": {"num_cpus": "two"}}]}, r"teacher 'ce': resources: num_cpus='two'"),
        ({"tasks": [{"name": "digits-mlp", "resources": [1]}]}, r"task 'digits-mlp': resources=\[1\]: expected a mapping"),
        ({"max_retries": -1}, r"max_retries=-1: expected an integer >= 0"),
        ({"imports": ["no_such_module_xyz"]}, r"imports: cannot import module 'no_such_module_xyz'"),
        ({"imports": "bench_fault_teachers"}, r"imports='bench_fault_teachers': expected a list of module names"),
        ({"workers": 0}, r"workers=0: expected an integer >= 1"),
        ({"workers": True}, r"workers=True: expected an integer >= 1"),
        ({"workers": "2"}, r"workers='2': expected an integer >= 1"),
    ],
)
def test_backend_config_errors_name_the_bad_value(change, message):
    with pytest.raises(ValueError, match=message):
        load_bench_config({**TINY, "teachers": ["ce"], **change})


def test_backend_choice_errors(monkeypatch):
    with pytest.raises(ValueError, match=r"--address 'auto' is for --backend ray"):
        make_backend("local", "auto")
    with pytest.raises(ValueError, match=r"unknown backend 'spark'; valid: \['local', 'ray'\]"):
        make_backend("spark")
    monkeypatch.setitem(sys.modules, "ray", None)  # as on an install without the extra
    with pytest.raises(ImportError, match=r'pip install "l2t-env\[ray\]"'):
        import_ray()


def test_ray_runs_on_cuda_must_ask_for_a_gpu(monkeypatch):
    """The check runs before Ray is imported: it needs no Ray installed."""
    from l2t_bench.backends import RayBackend
    from l2t_bench.config import plan_runs

    monkeypatch.setitem(sys.modules, "ray", None)  # as on an install without the extra

    cfg = load_bench_config({**TINY, "device": "cuda", "teachers": ["ce", {"name": "hypergrad", "resources": {"num_gpus": 0.5}}]})
    with pytest.raises(ValueError, match=r"device='cuda', but the runs of \['digits-mlp / ce'\] ask Ray for no GPU"):
        RayBackend.check_gpus(cfg, plan_runs(cfg))
    cfg = load_bench_config({**TINY, "device": "cuda", "resources": {"num_gpus": 0.25}, "teachers": ["ce"]})
    RayBackend.check_gpus(cfg, plan_runs(cfg))  # every run asks for a share of a GPU: accepted


def test_workers_run_the_bench_in_processes(tmp_path, capsys):
    """--workers 2: the same records as one process (a batched teacher, a one-by-one teacher and a
    trained SB3 agent whose batched seeds wait for it); a raising run is reported with its worker's
    traceback and the others finish; the retry command keeps --workers."""
    pytest.importorskip("stable_baselines3")
    ppo = {"name": "ppo", "kwargs": {"n_steps": 2, "batch_size": 2, "n_epochs": 1}}
    base = {**TINY, "teachers": ["ce", "test-raises", ppo, "l2t-dlf"], "train_seeds": [100], "train_timesteps": 4}
    one = run_bench(load_bench_config(base), tmp_path / "one")
    cfg = _write(tmp_path, {**base, "workers": 1})
    out = tmp_path / "two"
    assert cli.main(["bench", "--config", str(cfg), "--out", str(out), "--workers", "2"]) == 1
    text = capsys.readouterr().out
    assert "training ppo on digits-mlp (4 steps), in a worker process" in text
    assert f"retry them (finished runs are kept): l2t bench --config {cfg} --out {out} --workers 2" in text
    failed = json.loads((out / "failed_runs.json").read_text())
    assert sorted(f["key"].split("|")[1] for f in failed) == ["test-raises", "test-raises"]
    assert all("RuntimeError: test-raises: this teacher always fails" in f["details"] and "in act" in f["details"] for f in failed)
    two = {r["key"]: r for r in read_runs(out / "runs.jsonl")}
    assert sorted(two) == sorted(r["key"] for r in one.records)  # same runs, same keys
    for r in one.records:  # workers run with one torch thread each: equal to float32 rounding
        assert two[r["key"]]["test_acc"] == pytest.approx(r["test_acc"], abs=1e-6)
        assert two[r["key"]]["numerics"]["threads"] == 1
    assert (out / "agents").is_dir() and any((out / "agents").iterdir())
    assert cli.main(["bench", "--config", str(cfg), "--out", str(out), "--workers", "0"]) == 2
    assert "error: --workers=0: expected an integer >= 1" in capsys.readouterr().err


def test_a_worker_that_dies_fails_its_run_and_the_rerun_finishes(tmp_path):
    marker = tmp_path / "killed"
    cfg = load_bench_config({
        **TINY, "batch_seeds": False,
        "teachers": [{"name": "test-sigkill-once", "kwargs": {"marker": str(marker), "kill_at": 1}}],
    })
    result = run_bench(cfg, tmp_path / "out", backend=LocalBackend(workers=2))
    assert marker.exists() and result.failures  # the killed worker's run, and any other in flight then
    assert all("a worker process died" in f.error for f in result.failures)
    assert len(result.records) + len(result.failures) == 2
    again = run_bench(cfg, tmp_path / "out", backend=LocalBackend(workers=2))  # the rerun resumes: every seed finished once
    assert not again.failures
    assert sorted(r["seed"] for r in read_runs(tmp_path / "out" / "runs.jsonl")) == [0, 1]


def test_ctrl_c_stops_the_workers_and_keeps_finished_runs(tmp_path):
    """SIGINT to `l2t bench --workers 2` while a worker is busy: exit 130 at once (the busy worker
    is stopped, not waited for), the finished runs kept for the rerun."""
    import signal
    import subprocess
    import time

    cfg = _write(tmp_path, {**TINY, "teachers": ["ce", {"name": "test-sleeps", "kwargs": {"seconds": 120}}], "workers": 2})
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "l2t_bench.cli", "bench", "--config", str(cfg), "--out", str(out), "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job may inherit SIG_IGN
    )
    runs = out / "runs.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and not (runs.is_file() and len(read_runs(runs)) == 2):
        time.sleep(0.5)
    assert len(read_runs(runs)) == 2  # ce's two seeds; test-sleeps still asleep in the workers
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=100)  # test-sleeps sleeps 120 s: waiting for it would time out here
    assert proc.returncode == 130, text
    assert "interrupted: finished runs are in" in text
    assert sorted(r["teacher"] for r in read_runs(runs)) == ["ce", "ce"]
