"""Teachers with experience: pre-training across episodes, its bench rows, and the L2T-DLN stabilisers."""

from __future__ import annotations

import math

import pytest
import torch

import l2t_env  # noqa: F401
from l2t_agents import make_env, make_teacher, run_episode
from l2t_agents.pretraining import PretrainPlan, check_disjoint_seeds, pretrain, pretrained_meta, save_pretrained
from l2t_bench import cli
from l2t_bench.config import load_bench_config, plan_runs
from l2t_bench.driver import run_bench

TINY = dict(teaching_steps=3, unroll_steps=3, batch_size=8, val_batch_size=16, student_kwargs={"hidden": [16]})


def tiny_env(teacher, **kwargs):
    return make_env(teacher, "digits-mlp", device="cpu", **{**TINY, **kwargs})


# ------------------------------------------------------------------------------ pretraining
def test_overlapping_seed_lists_are_refused():
    with pytest.raises(ValueError, match=r"share \[3, 4\].*training seeds=\[1, 3, 4\], evaluation seeds=\[3, 4, 5\]"):
        check_disjoint_seeds([1, 3, 4], [3, 4, 5])
    check_disjoint_seeds([1, 2], [3])  # disjoint: fine
    teacher = make_teacher("l2t-dln")
    before = [p.detach().clone() for p in teacher.lstm.parameters()]
    with pytest.raises(ValueError, match=r"share \[7\]"):
        pretrain(teacher, PretrainPlan(seeds=[7, 8]), eval_seeds=[0, 7])
    assert all(torch.equal(p, q) for p, q in zip(teacher.lstm.parameters(), before))  # nothing ran


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seeds": []}, r"seeds=\[\]: expected a non-empty list"),
        ({"seeds": [1, 1]}, r"repeat a seed"),
        ({"seeds": [1], "episodes": 0}, r"episodes=0: expected an integer >= 1"),
        ({"seeds": [1], "tasks": []}, r"tasks=\[\]: expected a non-empty list"),
    ],
)
def test_bad_pretrain_plans_name_the_bad_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PretrainPlan(**kwargs)


def test_schedule_cycles_over_tasks_and_seeds():
    plan = PretrainPlan(seeds=[10, 11], tasks=["a", "b"], episodes=5)
    assert plan.schedule() == [("a", 10), ("a", 11), ("b", 10), ("b", 11), ("a", 10)]
    assert len(PretrainPlan(seeds=[1, 2, 3]).schedule()) == 3


def test_pretraining_resets_memory_per_episode_and_keeps_learning():
    teacher = make_teacher("l2t-dln")
    init = [p.detach().clone() for p in teacher.lstm.parameters()]
    memory_at_act: list[float] = []  # |hidden state| the LSTM starts each act from
    act = teacher.act

    def spy(obs):
        memory_at_act.append(sum(float(h.abs().sum() + c.abs().sum()) for h, c in teacher.state))
        return act(obs)

    teacher.act = spy
    records = pretrain(teacher, PretrainPlan(seeds=[100, 101], episodes=3), env_kwargs={"device": "cpu", **TINY}, eval_seeds=[0])
    steps = TINY["teaching_steps"]
    assert [r.seed for r in records] == [100, 101, 100] and all(r.steps == steps for r in records)
    # memory cleared at each episode's first act, carried within the episode
    assert [memory_at_act[i] for i in range(0, 3 * steps, steps)] == [0.0, 0.0, 0.0]
    assert all(m > 0 for i, m in enumerate(memory_at_act) if i % steps)
    # what was learnt is kept: one Adam step per teaching step over all episodes, weights moved
    assert teacher.iterations == 3 * steps
    assert all(s["step"] == 3 * steps for s in teacher.optimizer.state.values())
    assert all(not torch.equal(p, q) for p, q in zip(teacher.lstm.parameters(), init))


def test_pretraining_refuses_a_frozen_teacher():
    teacher = make_teacher("l2t-dln")
    teacher.learning = False
    with pytest.raises(ValueError, match="frozen"):
        pretrain(teacher, PretrainPlan(seeds=[1]), env_kwargs=TINY)


def test_saved_pretrained_teacher_round_trips_with_its_history(tmp_path):
    teacher = make_teacher("l2t-dln")
    records = pretrain(teacher, PretrainPlan(seeds=[100]), env_kwargs={"device": "cpu", **TINY})
    path = tmp_path / "t.pt"
    save_pretrained(teacher, path, records, wall_time=1.5)
    meta = pretrained_meta(path)
    assert meta["episodes"] == 1 and meta["train_time"] == 1.5 and meta["history"][0]["seed"] == 100
    loaded = make_teacher("l2t-dln")
    loaded.load(path)
    assert all(torch.equal(p, q) for p, q in zip(loaded.lstm.parameters(), teacher.lstm.parameters()))


def test_cli_teach_episodes_saves_a_teacher_that_kept_learning(tmp_path):
    save = tmp_path / "teacher.pt"
    args = ["teach", "--episodes", "2", "--quiet", "--out", str(tmp_path), "--save", str(save), "--device", "cpu"]
    args += [f"--set={k}={v}" for k, v in TINY.items()]
    assert cli.main(args) == 0
    teacher = make_teacher("l2t-dln")
    teacher.load(save)
    assert teacher.iterations == 2 * TINY["teaching_steps"]
    assert cli.main(["teach", "--episodes", "0", "--out", str(tmp_path)]) == 2


# ------------------------------------------------------------------------------ stabilisers
def test_zero_init_output_leaves_the_dln_at_its_init_until_the_teacher_learns():
    teacher = make_teacher("l2t-dln", zero_init_output=True)
    env = tiny_env(teacher)
    obs, _ = env.reset(seed=0)
    teacher.reset(env)
    phi0 = env.unwrapped.phi.clone()
    u = teacher.act(obs)
    assert torch.count_nonzero(u) == 0
    env.step(u)
    assert torch.equal(env.unwrapped.phi, phi0)
    # the Adam step moved the last cell off zero, so the next action moves phi
    assert torch.count_nonzero(teacher.act(env.unwrapped._observation())) > 0


def test_max_drift_keeps_phi_within_the_trust_region():
    drift = 2e-4  # a fifth of the per-step bound: the free teacher leaves it within an episode
    for max_drift, expect_inside in ((None, False), (drift, True)):
        teacher = make_teacher("l2t-dln", max_drift=max_drift)
        env = tiny_env(teacher, teaching_steps=6)
        run_episode(env, teacher, seed=0)
        moved = (env.unwrapped.phi - teacher.phi0).abs().max().item()
        assert (moved <= drift * 1.001) == expect_inside, (max_drift, moved)  # float32 rounding of phi


def test_proximity_pulls_the_teacher_gradient_towards_phi0():
    grads = {}
    for proximity in (0.0, 1e4):
        teacher = make_teacher("l2t-dln", proximity=proximity)
        env = tiny_env(teacher)
        obs, _ = env.reset(seed=0)
        teacher.reset(env)
        for _ in range(2):  # phi0 == phi at the first step: the penalty starts to act at the second
            obs, *_ = env.step(teacher.act(obs))
        grads[proximity] = teacher.lstm.cells[-1].weight_ih.grad.clone()
    assert not torch.allclose(grads[0.0], grads[1e4])


def test_clip_meta_grad_bounds_the_gradient_norm_at_each_step():
    norms = []
    teacher = make_teacher("l2t-dln", clip_meta_grad=1e-6)
    teacher.optimizer.register_step_pre_hook(
        lambda opt, *_: norms.append(math.sqrt(sum(float(p.grad.pow(2).sum()) for p in teacher.lstm.parameters())))
    )
    run_episode(tiny_env(teacher), teacher, seed=0)
    assert len(norms) == TINY["teaching_steps"] and max(norms) <= 1e-6 * (1 + 1e-4)


@pytest.mark.parametrize("key, value", [("proximity", -1.0), ("max_drift", float("nan")), ("clip_meta_grad", -2)])
def test_bad_stabiliser_values_are_refused(key, value):
    with pytest.raises(ValueError, match=rf"{key}={value!r}, expected a finite number >= 0"):
        make_teacher("l2t-dln", **{key: value})


# ------------------------------------------------------------------------------ bench rows
def _pretrain_bench(online_label: str = "l2t-dln (pretrained, online)") -> dict:
    pre = {"seeds": [100, 101], "episodes": 2}
    fast = {**TINY, "teaching_steps": 2}
    return {
        "tasks": [{"name": "digits-mlp", "label": "a", "overrides": fast},
                  {"name": "digits-mlp", "label": "b", "overrides": {**fast, "lr": 0.05}}],
        "teachers": [
            "ce",
            {"name": "l2t-dln", "label": "l2t-dln (fresh)"},
            {"name": "l2t-dln", "label": "l2t-dln (pretrained, frozen)", "pretrain": pre},
            {"name": "l2t-dln", "label": online_label, "pretrain": {**pre, "online": True}},
            {"name": "l2t-dln", "label": "l2t-dln (pretrained on a)", "pretrain": {**pre, "tasks": ["a"]}},
        ],
        "seeds": [0],
        "device": "cpu",
    }


def test_pretrain_entries_are_separate_rows_sharing_one_saved_teacher(tmp_path, monkeypatch):
    import l2t_agents.pretraining as pretraining

    calls = []
    real = pretraining.pretrain
    monkeypatch.setattr(pretraining, "pretrain", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = load_bench_config(_pretrain_bench())
    records = run_bench(cfg, tmp_path, quiet=True)
    rows = {(r["task"], r["teacher"]) for r in records}
    assert len(records) == 2 * 5 and len(rows) == 10
    agents = {(r["task"], r["teacher"]): r["agent"] for r in records}
    # frozen and online share the teacher pretrained on their task; one per task, plus none for fresh
    assert agents[("a", "l2t-dln (pretrained, frozen)")] == agents[("a", "l2t-dln (pretrained, online)")]
    assert agents[("a", "l2t-dln (pretrained, frozen)")] != agents[("b", "l2t-dln (pretrained, frozen)")]
    # transfer: pretrained on a, evaluated on b, is the teacher pretrained on a
    assert agents[("b", "l2t-dln (pretrained on a)")] == agents[("a", "l2t-dln (pretrained, frozen)")]
    assert agents[("a", "l2t-dln (fresh)")] is None
    assert len(calls) == 2 and len(list((tmp_path / "agents").glob("pretrained__*.pt"))) == 2
    # a relabelled rerun reuses the saved teachers, and the frozen rows repeat exactly
    (tmp_path / "runs.jsonl").unlink()
    rerun = _pretrain_bench("online again")
    rerun["teachers"] = rerun["teachers"][2:]
    again = run_bench(load_bench_config(rerun), tmp_path, quiet=True)
    assert len(calls) == 2
    frozen = lambda rs: [r["test_acc"] for r in rs if r["teacher"] == "l2t-dln (pretrained, frozen)"]  # noqa: E731
    assert frozen(again) == frozen(records)


def test_pretrain_entry_errors_name_the_bad_value():
    cfg = _pretrain_bench()
    bad = dict(cfg, teachers=[{"name": "l2t-dln", "pretrain": {"seeds": [1, 2]}}], seeds=[2, 3])
    with pytest.raises(ValueError, match=r"pretrain seeds and seeds share \[2\]"):
        load_bench_config(bad)
    for pre, message in (
        ({"seeds": [5], "epochs": 3}, r"unknown key\(s\) \['epochs'\]; valid: \['seeds', 'episodes', 'tasks', 'online'\]"),
        ({"seeds": [5], "episodes": -1}, r"episodes=-1: expected an integer >= 1"),
        ({"seeds": [5], "tasks": ["no-such-task"]}, r"unknown task 'no-such-task'"),
        ({"seeds": [5], "online": "yes"}, r"online='yes': expected true or false"),
        ({"seeds": []}, r"pretrain seeds is empty"),
    ):
        with pytest.raises(ValueError, match=message):
            load_bench_config(dict(cfg, teachers=[{"name": "l2t-dln", "pretrain": pre}]))
    with pytest.raises(ValueError, match="needs a teacher that learns online"):
        load_bench_config(dict(cfg, teachers=[{"name": "hypergrad", "pretrain": {"seeds": [5]}}]))


def test_teacher_env_kwargs_reach_that_teachers_envs_only(tmp_path, monkeypatch):
    import l2t_agents

    seen = []
    real = l2t_agents.make_env
    monkeypatch.setattr(l2t_agents, "make_env", lambda t, task, **kw: seen.append(kw) or real(t, task, **kw))
    real_vec = l2t_agents.make_vector_env  # the seeds of a batching teacher (batch_seeds) share one vector env
    monkeypatch.setattr(l2t_agents, "make_vector_env", lambda t, n, task, **kw: seen.append(kw) or real_vec(t, n, task, **kw))
    raw = {
        "tasks": [{"name": "digits-mlp", "overrides": {**TINY, "teaching_steps": 1}}],
        "teachers": ["fixed", {"name": "fixed", "label": "fixed (small dln)", "env_kwargs": {"loss_kwargs": {"hidden": [8]}}}],
        "seeds": [0], "device": "cpu", "env_kwargs": {"action_scale": 2e-3},
    }
    cfg = load_bench_config(raw)
    assert len({r.config_hash for r in plan_runs(cfg)}) == 2
    run_bench(cfg, tmp_path, quiet=True)
    assert [kw.get("loss_kwargs") for kw in seen] == [None, {"hidden": [8]}]
    assert all(kw["action_scale"] == 2e-3 for kw in seen)
    with pytest.raises(ValueError, match=r"unknown env argument\(s\) \['teaching_steps'\]; valid: \[.*'loss_kwargs'"):
        load_bench_config({**raw, "teachers": [{"name": "fixed", "env_kwargs": {"teaching_steps": 3}}]})
