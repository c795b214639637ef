"""``l2t train`` (learning curve, agent.zip, --resume), SB3 teachers in control mode, and bench
entries that ``load:`` a trained agent instead of training one."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml

pytest.importorskip("stable_baselines3")

import l2t_env  # noqa: E402,F401  (registers L2T-v0)
from l2t_agents import make_teacher, make_vector_env  # noqa: E402
from l2t_bench.cli import main  # noqa: E402
from l2t_bench.config import load_bench_config  # noqa: E402

TINY_TASK = ["--task", "digits-mlp", "--set", "teaching_steps=4", "--set", "unroll_steps=2", "--set", "student_kwargs={hidden: [16]}"]
TINY_OVERRIDES = {"teaching_steps": 4, "unroll_steps": 2, "student_kwargs": {"hidden": [16]}}
PPO = ["--agent", "ppo", "--config", "ppo-control", "--agent-arg", "n_steps=4", "--agent-arg", "batch_size=8", "--agent-arg", "n_epochs=1"]


def _train(out, *extra) -> int:
    return main(["train", *PPO, *TINY_TASK, "--env-arg", "loss=gce", "--n-envs", "2", "--train-seeds", "100-103",
                 "--eval-seeds", "200-202", "--eval-every", "8", "--quiet", "--out", str(out), *extra])


def _rows(out) -> list[dict]:
    with (out / "learning_curve.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "ppo"
    assert _train(out, "--timesteps", "16") == 0
    return out


def test_train_writes_a_learning_curve_on_the_held_out_seeds(trained):
    rows = _rows(trained)
    assert [int(r["env_steps"]) for r in rows] == [0, 8, 16]  # before training, every 8 env steps, the end
    for r in rows:
        assert float(r["test_acc_ci_low"]) <= float(r["test_acc_mean"]) <= float(r["test_acc_ci_high"])
        assert 0.0 <= float(r["es_test_acc_mean"]) <= 1.0
    assert int(rows[-1]["episodes"]) == 4  # 16 env steps of 2 students = 2 episodes of 4 steps each
    assert (trained / "learning_curve.png").stat().st_size > 0
    settings = json.loads((trained / "train.json").read_text())["settings"]
    assert settings["eval_seeds"] == [200, 201, 202] and settings["train_seeds"] == [100, 101, 102, 103]


def test_the_curve_row_is_the_saved_agent_evaluated_again(trained):
    """The last row's test accuracy is what agent.zip, loaded and run frozen on the held-out seeds, gives."""
    from l2t_agents.evaluation import run_episodes

    teacher = make_teacher("ppo")
    teacher.load(trained / "agent.zip")
    assert teacher.action_mode == "control" and teacher.meta["timesteps_done"] == 16
    env = make_vector_env(teacher, 3, "digits-mlp", loss="gce", device="cpu", monitor_every=1, **TINY_OVERRIDES)
    records = run_episodes(env, teacher, [200, 201, 202])
    assert np.mean([r.final["test_acc"] for r in records]) == pytest.approx(float(_rows(trained)[-1]["test_acc_mean"]), abs=1e-9)


def test_resume_continues_to_the_new_budget_and_refuses_other_settings(trained, tmp_path, capsys):
    import shutil

    out = tmp_path / "ppo"
    shutil.copytree(trained, out)
    assert _train(out, "--timesteps", "32", "--resume") == 0
    assert [int(r["env_steps"]) for r in _rows(out)] == [0, 8, 16, 24, 32]
    assert make_teacher("ppo").read_info(out / "agent.zip")["meta"]["timesteps_done"] == 32
    code = main(["train", *PPO, *TINY_TASK, "--env-arg", "loss=gce", "--n-envs", "2", "--train-seeds", "100-103",
                 "--eval-seeds", "200-202", "--eval-every", "4", "--quiet", "--out", str(out), "--timesteps", "40", "--resume"])
    assert code == 2 and "'eval_every': (8, 4)" in capsys.readouterr().err
    assert [int(r["env_steps"]) for r in _rows(out)][-1] == 32  # the refused resume changed nothing
    before = (out / "train.json").read_text()
    assert _train(out, "--timesteps", "40") == 2  # a finished folder is not overwritten without --resume
    assert (out / "train.json").read_text() == before


def test_train_refuses_overlapping_seeds_and_a_resume_without_snapshot(tmp_path, capsys):
    code = main(["train", *PPO, *TINY_TASK, "--env-arg", "loss=gce", "--train-seeds", "0-9", "--eval-seeds", "5,20", "--out", str(tmp_path / "a")])
    assert code == 2 and "share seed(s) [5]" in capsys.readouterr().err
    assert _train(tmp_path / "b", "--resume") == 2
    assert "no training snapshot" in capsys.readouterr().err


def test_control_agent_config_refuses_the_summary_observation():
    with pytest.raises(ValueError, match="observation='summary'.*action_mode='control'"):
        make_teacher("ppo", config="ppo-control", observation="summary")
    with pytest.raises(ValueError, match="action_mode='full'; valid: \\['layer', 'control'\\]"):
        make_teacher("ppo", action_mode="full")


def _bench(tmp_path, agent, seeds=(0, 1)) -> dict:
    return {
        "name": "load-test", "tasks": [{"name": "digits-mlp", "overrides": TINY_OVERRIDES}],
        "teachers": [{"name": "ppo", "label": "ppo-trained", "load": str(agent), "env_kwargs": {"loss": "gce"}}],
        "seeds": list(seeds), "device": "cpu",
    }


def test_bench_entry_loads_a_trained_agent_instead_of_training(trained, tmp_path):
    cfg_file = tmp_path / "bench.yaml"
    cfg_file.write_text(yaml.safe_dump(_bench(tmp_path, trained / "agent.zip")))
    assert main(["bench", "--config", str(cfg_file), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    records = [json.loads(line) for line in (tmp_path / "out" / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in records) == [0, 1]
    assert all(r["agent"] == str((trained / "agent.zip").resolve()) for r in records)
    assert not (tmp_path / "out" / "agents").exists()  # nothing was trained


def test_bench_load_checks_the_file_and_the_agents_training_seeds(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="load='nowhere.zip' not found"):
        load_bench_config(_bench(tmp_path, "nowhere.zip"))
    with pytest.raises(ValueError, match=r"trained on seed\(s\) \[101\]"):
        load_bench_config(_bench(tmp_path, trained / "agent.zip", seeds=(0, 101)))
    a = load_bench_config(_bench(tmp_path, trained / "agent.zip"))
    assert a.teachers[0].agent_sha256 and not a.teachers[0].trainable


def test_bench_trains_with_a_learning_curve_and_plots_it(tmp_path):
    cfg = {
        "name": "curve-test", "tasks": [{"name": "digits-mlp", "overrides": TINY_OVERRIDES}],
        "teachers": [{"name": "ppo", "kwargs": {"config": "ppo-control", "n_envs": 2, "vector_env": True, "n_steps": 4, "batch_size": 8,
                                                "n_epochs": 1}, "env_kwargs": {"loss": "gce"}}],
        "seeds": [0, 1], "train_seeds": [100, 101], "train_timesteps": 16, "device": "cpu",
        "train_eval": {"every": 8, "seeds": [200, 201]},
    }
    with pytest.raises(ValueError, match=r"train_eval.seeds and train_seeds share \[101\]"):
        load_bench_config({**cfg, "train_eval": {"every": 8, "seeds": [101, 200]}})
    cfg_file = tmp_path / "bench.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    assert main(["bench", "--config", str(cfg_file), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    (agent,) = (tmp_path / "out" / "agents").iterdir()
    assert [int(r["env_steps"]) for r in _rows(agent)] == [0, 8, 16]
    assert not list((tmp_path / "out" / "agents").glob(".*"))  # the snapshot and the curve beside it are gone
    assert (tmp_path / "out" / "learning_curves.png").stat().st_size > 0


def test_curve_row_summarises_the_episodes_of_the_held_out_seeds():
    from l2t_agents.evaluation import EpisodeRecord
    from l2t_bench.learning_curves import curve_row

    records = []
    for i, (rewards, acc, monitored) in enumerate([([0.5, 0.25], 0.8, [0.6, 0.9]), ([1.0, -0.5], 0.6, [0.7, 0.5])]):
        r = EpisodeRecord("ppo", "t", i, final={"test_acc": acc})
        r.curves["reward"] = rewards
        r.curves.update(monitor_step=[0, 1], monitor_val_acc=[0.1, 0.2] if i == 0 else [0.3, 0.2], monitor_test_acc=monitored)
        records.append(r)
    row = curve_row(100, 12.345, 7, records)
    assert row["env_steps"] == 100 and row["wall_time_s"] == 12.35 and row["episodes"] == 7
    assert row["return_mean"] == pytest.approx(0.625)  # (0.75 + 0.5) / 2
    assert row["test_acc_mean"] == pytest.approx(0.7)
    assert row["es_test_acc_mean"] == pytest.approx((0.9 + 0.7) / 2)  # each seed's test acc at its best val step
    assert row["test_acc_ci_low"] == pytest.approx(0.6) and row["test_acc_ci_high"] == pytest.approx(0.8)


def test_bench_training_killed_mid_way_resumes_from_its_snapshot(tmp_path, monkeypatch):
    """A training that dies after its 8-step point is resumed there by the rerun (in ``keep``):
    the curve goes on from 8, not from 0, and nothing is left beside the agent."""
    from l2t_bench.config import plan_runs
    from l2t_bench.curve_callback import LearningCurve
    from l2t_bench.runner import agent_dir, learning_curve_paths, prepare_agent

    cfg = load_bench_config({
        "name": "resume-test", "tasks": [{"name": "digits-mlp", "overrides": TINY_OVERRIDES}],
        "teachers": [{"name": "ppo", "kwargs": {"config": "ppo-control", "n_envs": 2, "vector_env": True, "n_steps": 4, "batch_size": 8,
                                                "n_epochs": 1}, "env_kwargs": {"loss": "gce"}}],
        "seeds": [0], "train_seeds": [100, 101], "train_timesteps": 24, "device": "cpu", "train_eval": {"every": 8, "seeds": [200]},
    })
    run = plan_runs(cfg)[0]
    path, keep = agent_dir(tmp_path / "out", run), tmp_path / "keep"
    original = LearningCurve.evaluate

    def dies_after_8(self):
        row = original(self)
        if row["env_steps"] >= 8:
            raise RuntimeError("worker killed")
        return row

    monkeypatch.setattr(LearningCurve, "evaluate", dies_after_8)
    with pytest.raises(RuntimeError, match="worker killed"):
        prepare_agent(cfg, run, path, keep=keep)
    curve, snapshot = learning_curve_paths(keep / path.name)
    assert snapshot.is_dir() and not path.exists()
    monkeypatch.setattr(LearningCurve, "evaluate", original)
    prepare_agent(cfg, run, path, keep=keep)
    assert [int(r["env_steps"]) for r in _rows(path)] == [0, 8, 16, 24]
    assert not curve.exists() and not snapshot.exists()
    assert make_teacher("ppo").read_info(path)["meta"]["timesteps_done"] == 24


def test_shipped_agents_load_and_act_and_were_trained_on_other_seeds():
    """Every agent in agents/trained loads with this code, acts in the control env it was trained
    in, and was trained on seeds disjoint from those the built-in benches evaluate on (quick's 0-7,
    rl-transfer's 0-9)."""
    from pathlib import Path

    import l2t_agents
    from l2t_agents.sb3_teachers import SB3Teacher

    files = sorted((Path(l2t_agents.__file__).resolve().parent / "trained").glob("*.zip"))
    assert len(files) == 6
    for file in files:
        info = SB3Teacher.read_info(file)
        teacher = make_teacher(info["teacher"])
        teacher.load(file)
        assert teacher.action_mode == "control" and teacher.meta["timesteps_done"] >= 100_000
        assert not set(teacher.meta["train_seeds"]) & set(range(10))
        assert file.name == f"{info['teacher']}-control-{teacher.meta['task']}.zip"
        env_kwargs = {k: v for k, v in teacher.meta["env_kwargs"].items() if k != "device"}
        env = make_vector_env(teacher, 2, teacher.meta["task"], device="cpu", teaching_steps=3, **env_kwargs)
        obs, _ = env.reset(seed=[0, 1])
        teacher.reset(env)
        action = teacher.act(obs)
        assert action.shape == (2, 3) and np.all(np.abs(action) <= 1)
        env.close()
