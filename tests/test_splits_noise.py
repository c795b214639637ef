"""Clean-split size, task-level label noise, and training on (or fine-tuning on) the clean split."""

from __future__ import annotations

import hashlib

import gymnasium as gym
import numpy as np
import pytest
import torch

import l2t_env  # noqa: F401  (registers L2T-v0)
from l2t_agents.base import TEACHERS
from l2t_agents.registry import make_teacher
from l2t_agents.evaluation import make_env, make_vector_env
from l2t_env.data import IndexStream, noisy_labels, split_data, split_indices, split_sizes
from l2t_env.tasks import RawData, TaskConfig, available_tasks, load_raw_data, load_task

CPU = torch.device("cpu")
N = 3
DIGITS = dict(task="digits-mlp", unroll_steps=2, teaching_steps=10, lookahead="off", device="cpu")


def _splits(task, seed: int, **overrides):
    cfg = load_task(task, **overrides)
    return split_data(
        load_raw_data(cfg), cfg.val_fraction, seed, CPU, torch.float32, val_size=cfg.val_size, label_noise=cfg.label_noise
    )


def _tiny_raw(n_pool: int = 200, classes: int = 4) -> RawData:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(n_pool + 20, 5, generator=gen), torch.randint(0, classes, (n_pool + 20,), generator=gen)
    return RawData.from_tensors(x[:n_pool], y[:n_pool], x[n_pool:], y[n_pool:], num_classes=classes)


# ----------------------------------------------------------------------------- digits-mlp-noisy unchanged
#: sha256 of digits-mlp-noisy's (train rows, val rows, training labels) for seeds 0-4, computed
#: with the code before task-level noise and val_size existed (commit 2a451cf): recorded results
#: of this task must stay reproducible.
NOISY_DIGITS_SPLITS_SHA256 = "ec46f30522c1aadb9d7e98b05e61ace30967a11a72d32441d11bf23fb8f1a7a8"


def _digest(cfg: TaskConfig) -> str:
    raw, h = load_raw_data(cfg), hashlib.sha256()
    for seed in range(5):
        for t in split_indices(raw, cfg.val_fraction, seed, val_size=cfg.val_size, label_noise=cfg.label_noise):
            h.update(t.to(torch.int64).numpy().tobytes())
    return h.hexdigest()


def test_digits_mlp_noisy_splits_and_labels_are_bit_identical_to_before():
    assert _digest(load_task("digits-mlp-noisy")) == NOISY_DIGITS_SPLITS_SHA256


def test_task_level_symmetric_noise_draws_what_digits_noisy_draws():
    task_level = load_task("digits-mlp", label_noise={"rate": 0.4, "kind": "symmetric"})
    assert _digest(task_level) == NOISY_DIGITS_SPLITS_SHA256


# ----------------------------------------------------------------------------- val_size
def test_val_size_sets_the_split_sizes_and_unset_keeps_the_fraction_split():
    assert split_sizes(1000, 0.25) == split_sizes(1000, 0.25, None) == (750, 250)
    assert split_sizes(1000, 0.25, 37) == (963, 37)
    s = _splits("digits-mlp", 0, val_size=50)
    assert (len(s.x_val), len(s.x_train)) == (50, 1438 - 50)
    assert len(set(s.train_index.tolist()) | set(s.val_index.tolist())) == 1438
    # unset: the same rows as before (same RNG draws)
    raw = load_raw_data(load_task("digits-mlp"))
    a, b = split_indices(raw, 0.25, 3), split_indices(raw, 0.25, 3, val_size=None)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_val_size_reaches_the_envs():
    env = gym.make("L2T-v0", **DIGITS, val_size=40)
    env.reset(seed=0)
    assert len(env.unwrapped.splits.x_val) == 40 and len(env.unwrapped._x_fixed) == 40
    venv = gym.make_vec("L2T-v0", num_envs=2, vectorization_mode="vector_entry_point", **DIGITS, val_size=40)
    assert venv.unwrapped.batching == "vmap"
    assert venv.unwrapped._core.n_val == 40 and venv.unwrapped._core.n_fixed == 40


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "100"])
def test_bad_val_size_raises_naming_it(bad):
    with pytest.raises(ValueError, match=rf"val_size={bad!r}"):
        load_task("digits-mlp", val_size=bad)


def test_val_size_that_leaves_no_training_examples_raises_naming_it():
    with pytest.raises(ValueError, match=r"val_size=1438 leaves no training examples out of 1438"):
        gym.make("L2T-v0", **DIGITS, val_size=1438)
    with pytest.raises(ValueError, match=r"batch_size=25 is larger than the training split.*val_size=1430"):
        gym.make("L2T-v0", **DIGITS, val_size=1430)


# ----------------------------------------------------------------------------- label noise
def _noise_fraction(kind: str, rate: float, classes: int = 10, n: int = 200_000) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    y = torch.randint(0, classes, (n,), generator=gen)
    return y, noisy_labels(y, rate, classes, torch.Generator().manual_seed(2), kind)


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_symmetric_noise_changes_about_rate_times_k_minus_1_over_k(rate):
    y, noisy = _noise_fraction("symmetric", rate)
    changed = noisy != y
    assert abs(changed.float().mean().item() - rate * 9 / 10) < 0.005
    # the new labels are uniform over the other classes
    counts = torch.bincount((noisy[changed] - y[changed]) % 10, minlength=10)[1:].float()
    assert (counts / counts.sum() - 1 / 9).abs().max() < 0.01


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_pair_noise_flips_k_to_k_plus_1_at_the_rate(rate):
    y, noisy = _noise_fraction("pair", rate, classes=7)
    changed = noisy != y
    assert abs(changed.float().mean().item() - rate) < 0.005
    assert torch.equal(noisy[changed], (y[changed] + 1) % 7)
    assert int(noisy[y == 6].max()) == 6 and set(noisy[y == 6].tolist()) == {6, 0}  # wraps around


def test_task_noise_is_only_on_training_labels_fixed_by_the_seed():
    clean = _splits("digits-mlp", 3)
    pair = _splits("digits-mlp-pairnoise", 3)
    assert torch.equal(pair.y_train_clean, clean.y_train) and torch.equal(pair.y_val, clean.y_val)
    assert torch.equal(pair.y_test, clean.y_test) and torch.equal(pair.x_train, clean.x_train)
    changed = pair.y_train != clean.y_train
    assert torch.equal(pair.y_train[changed], (clean.y_train[changed] + 1) % 10)
    assert 0.35 < changed.float().mean().item() < 0.45
    assert torch.equal(_splits("digits-mlp-pairnoise", 3).y_train, pair.y_train)
    assert not torch.equal(_splits("digits-mlp-pairnoise", 4).y_train != _splits("digits-mlp-pairnoise", 4).y_train_clean, changed)


def test_noise_works_on_user_data_and_in_the_vector_env():
    raw = _tiny_raw()
    cfg = dict(dataset=raw, label_noise={"rate": 1.0, "kind": "pair"}, batch_size=5, val_batch_size=10, **DIGITS)
    env = gym.make("L2T-v0", **cfg)
    env.reset(seed=0)
    s = env.unwrapped.splits
    assert torch.equal(s.y_train, (s.y_train_clean + 1) % 4)
    venv = gym.make_vec("L2T-v0", num_envs=2, vectorization_mode="vector_entry_point", **cfg)
    venv.reset(seed=0)
    core = venv.unwrapped._core
    assert torch.equal(core.y_train[0].cpu(), s.y_train.cpu())


@pytest.mark.parametrize(
    "noise, match",
    [
        ({"rate": 1.5}, r"label_noise rate=1.5, expected a number in \[0, 1\]"),
        ({"rate": 0.2, "kind": "uniformish"}, r"label_noise kind='uniformish', expected one of \['symmetric', 'pair'\]"),
        ({"kind": "pair"}, r"label_noise=\{'kind': 'pair'\}, expected None or a mapping"),
        (0.4, r"label_noise=0.4, expected None or a mapping"),
    ],
)
def test_bad_label_noise_raises_naming_it(noise, match):
    with pytest.raises(ValueError, match=match):
        load_task("digits-mlp", label_noise=noise)


def test_task_noise_on_an_already_noisy_dataset_raises():
    with pytest.raises(ValueError, match=r"label_noise=.*already adds noise \(train_label_noise=0.4\)"):
        gym.make("L2T-v0", task="digits-mlp-noisy", label_noise={"rate": 0.2}, device="cpu")


def test_new_tasks_exist_with_their_settings():
    names = available_tasks()
    assert {"mnist1d-mlp-noisy", "mnist1d-mlp-noisy-smallval", "digits-mlp-pairnoise"} <= set(names)
    assert load_task("mnist1d-mlp-noisy").label_noise == {"rate": 0.4, "kind": "symmetric"}
    small = load_task("mnist1d-mlp-noisy-smallval")
    assert small.val_size == 100 and small.label_noise == {"rate": 0.4, "kind": "symmetric"}
    assert load_task("digits-mlp-pairnoise").label_noise == {"rate": 0.4, "kind": "pair"}


# ----------------------------------------------------------------------------- train_split / fine-tuning
def test_finetune_start_of_the_settings():
    base = load_task("digits-mlp", teaching_steps=10)
    assert base.finetune_start is None
    assert base.replace(train_split="val").finetune_start == 0
    assert base.replace(finetune_fraction=0.2).finetune_start == 8
    assert base.replace(finetune_fraction=0.01).finetune_start == 9  # at least one step


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"train_split": "test"}, r"train_split='test', expected one of \['train', 'val'\]"),
        ({"finetune_fraction": 1.0}, r"finetune_fraction=1.0, expected a number in \[0, 1\)"),
        ({"finetune_fraction": -0.1}, r"finetune_fraction=-0.1"),
        ({"finetune_fraction": 0.2, "train_split": "val"}, r"finetune_fraction=0.2 with train_split='val'"),
    ],
)
def test_bad_split_settings_raise_naming_them(overrides, match):
    with pytest.raises(ValueError, match=match):
        load_task("digits-mlp", **overrides)


def test_batch_larger_than_the_clean_split_it_trains_on_raises():
    with pytest.raises(ValueError, match=r"batch_size=25 is larger than the validation split \(20 examples.*train_split='val'"):
        gym.make("L2T-v0", **DIGITS, val_size=20, train_split="val")


def test_index_stream_switches_to_val_at_the_finetune_step():
    stream = IndexStream(50, 7, 3, 2, 4, seed=0, device=CPU, finetune_start=4)
    plain = IndexStream(50, 7, 3, 2, 4, seed=0, device=CPU)
    for step in range(8):
        idx, vidx = stream.next_indices()
        pidx, pvidx = plain.next_indices()
        assert stream.from_val == (step >= 4) and not plain.from_val
        assert torch.equal(vidx, pvidx)  # the validation batches are unchanged
        if step < 4:
            assert torch.equal(idx, pidx)  # and so are the training batches before the switch
        else:
            assert int(idx.max()) < 7


def _batch_rows(env) -> set:
    """Pool rows of the next step's training batch, found by matching inputs against the pool."""
    u = env.unwrapped
    pool = u.raw.x_pool
    x = u._next.x.flatten(0, 1)
    rows = set()
    for xi in x:
        match = (pool == xi.to(pool.dtype)).all(1).nonzero().flatten().tolist()
        rows.update(match)
    return rows


def test_train_split_val_draws_every_training_batch_from_the_val_rows():
    env = make_env(make_teacher("ce-val"), **{k: v for k, v in DIGITS.items() if k != "lookahead"})
    env.reset(seed=1)
    u = env.unwrapped
    val_rows, train_rows = set(u.splits.val_index.tolist()), set(u.splits.train_index.tolist())
    for _ in range(5):
        rows = _batch_rows(env)
        assert rows <= val_rows and not rows & train_rows
        env.step(np.zeros(env.action_space.shape, np.float32))
    # with the clean labels of those rows
    y_of_row = dict(zip(u.splits.val_index.tolist(), u.splits.y_val.tolist()))
    x = u._next.x.flatten(0, 1)
    assert all(y_of_row[(u.raw.x_pool == xi).all(1).nonzero()[0, 0].item()] == yi for xi, yi in zip(x, u._next.y.flatten().tolist()))


def test_finetune_switches_to_the_val_rows_at_the_right_step():
    env = make_env(make_teacher("ce-finetune", fraction=0.3), task="digits-mlp-noisy", unroll_steps=2, teaching_steps=10, device="cpu")
    u = env.unwrapped
    assert u.config.finetune_fraction == 0.3 and u.config.finetune_start == 7
    env.reset(seed=2)
    val_rows, train_rows = set(u.splits.val_index.tolist()), set(u.splits.train_index.tolist())
    for t in range(10):
        rows = _batch_rows(env)  # the batches of teaching step t
        assert rows <= (val_rows if t >= 7 else train_rows), t
        if t >= 7:  # clean labels while fine-tuning
            y_of_row = dict(zip(u.splits.val_index.tolist(), u.splits.y_val.tolist()))
            x = u._next.x.flatten(0, 1)
            assert all(y_of_row[(u.raw.x_pool == xi).all(1).nonzero()[0, 0].item()] == yi for xi, yi in zip(x, u._next.y.flatten().tolist()))
        *_, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))
    assert truncated and info["student_steps"] == 20


def test_finetune_checkpoint_resumes_the_same_batches():
    kwargs = dict(task="digits-mlp-noisy", unroll_steps=2, teaching_steps=6, device="cpu", loss="ce", lookahead="off", finetune_fraction=0.5)
    env = gym.make("L2T-v0", **kwargs)
    env.reset(seed=0)
    zero = np.zeros(env.action_space.shape, np.float32)
    env.step(zero)
    env.step(zero)
    state = env.unwrapped.state_dict()
    rest = [env.step(zero)[4]["train_loss"] for _ in range(4)]
    again = gym.make("L2T-v0", **kwargs)
    again.reset(options={"state": state})
    assert [again.step(zero)[4]["train_loss"] for _ in range(4)] == rest


@pytest.mark.parametrize("settings", [{"train_split": "val"}, {"finetune_fraction": 0.4}])
def test_vector_env_follows_single_envs_with_the_clean_split_settings(settings):
    """The vmap path draws its own batches: sub-env i must match the single env of seed + i."""
    kwargs = dict(DIGITS, task="digits-mlp-noisy", loss="ce", val_size=60, **settings)
    venv = gym.make_vec("L2T-v0", num_envs=N, vectorization_mode="vector_entry_point", **kwargs)
    assert venv.unwrapped.batching == "vmap"
    singles = [gym.make("L2T-v0", **kwargs) for _ in range(N)]
    venv.reset(seed=5)
    for i, env in enumerate(singles):
        env.reset(seed=5 + i)
    actions = np.zeros(venv.action_space.shape, np.float32)
    for t in range(kwargs["teaching_steps"]):
        obs, reward, _, truncated, info = venv.step(actions)
        results = [env.step(actions[i]) for i, env in enumerate(singles)]
        for key in ("train_loss", "train_acc", "val_loss"):
            np.testing.assert_allclose(info[key], [r[4][key] for r in results], rtol=2e-4, atol=2e-5, err_msg=f"step {t} {key}")
    assert truncated.all()
    for key in ("train_acc", "val_acc", "test_acc"):
        np.testing.assert_allclose(info["final"][key], [r[4]["final"][key] for r in results], atol=1e-6, err_msg=key)


def test_vector_env_mixes_rows_before_and_after_the_switch():
    """After an autoreset some rows fine-tune while others do not yet: each must draw its own split."""
    kwargs = dict(DIGITS, task="digits-mlp-noisy", loss="ce", teaching_steps=4, finetune_fraction=0.5)
    venv = gym.make_vec("L2T-v0", num_envs=2, vectorization_mode="vector_entry_point", **kwargs)
    venv.reset(seed=0)
    zero = np.zeros(venv.action_space.shape, np.float32)
    venv.step(zero)
    venv.reset(seed=[None, 9], options={"reset_mask": np.array([False, True])})
    core = venv.unwrapped._core
    venv.step(zero)  # row 0 draws step 2's batches (fine-tuning), row 1 step 1's (not yet)
    assert [s.from_val for s in core.streams] == [True, False]
    single = gym.make("L2T-v0", **kwargs)
    single.reset(seed=0)
    for _ in range(2):
        single.step(zero[0])
    assert torch.equal(core.ny[:, 0].cpu(), single.unwrapped._next.y.cpu())
    assert torch.allclose(core.nx[:, 0].cpu(), single.unwrapped._next.x.cpu())


# ----------------------------------------------------------------------------- teachers
def test_clean_split_teachers_are_registered_with_their_env_settings():
    assert {"ce-val", "ce-finetune"} <= set(TEACHERS)
    assert make_teacher("ce-val").env_kwargs["train_split"] == "val"
    assert make_teacher("ce-finetune").env_kwargs["finetune_fraction"] == 0.2
    assert make_teacher("ce-finetune", fraction=0.5).env_kwargs["finetune_fraction"] == 0.5
    with pytest.raises(ValueError, match=r"fraction=1.5, expected a number in \(0, 1\)"):
        make_teacher("ce-finetune", fraction=1.5)
    venv = make_vector_env(make_teacher("ce-val"), 2, task="digits-mlp", teaching_steps=2, unroll_steps=2, device="cpu")
    assert venv.unwrapped.config.train_split == "val"


def test_clean_split_teachers_run_in_a_bench_and_are_listed(tmp_path, capsys):
    import json

    from l2t_bench import cli

    assert cli.main(["list"]) == 0
    listed = capsys.readouterr().out
    teachers = next(line for line in listed.splitlines() if line.startswith("teachers:"))
    assert "ce-val" in teachers and "ce-finetune" in teachers and "digits-mlp-pairnoise" in listed
    config = tmp_path / "clean.yaml"
    config.write_text(
        "name: clean\n"
        "tasks:\n  - name: digits-mlp-noisy\n    overrides: {teaching_steps: 5, unroll_steps: 2}\n"
        "teachers:\n  - ce\n  - ce-val\n  - {name: ce-finetune, kwargs: {fraction: 0.4}}\n"
        "seeds: [0, 1]\ndevice: cpu\n"
    )
    assert cli.main(["bench", "--config", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    runs = [json.loads(line) for line in (tmp_path / "out" / "runs.jsonl").read_text().splitlines()]
    by_teacher: dict = {}
    for run in runs:
        by_teacher.setdefault(run["teacher"], []).append(run)
    assert sorted(by_teacher) == ["ce", "ce-finetune", "ce-val"] and all(len(v) == 2 for v in by_teacher.values())
    assert all(r["teacher_kwargs"] == {"fraction": 0.4} for r in by_teacher["ce-finetune"])
    # the same seeds train differently: not the plain CE run under another name
    acc = {name: [r["train_acc"] for r in v] for name, v in by_teacher.items()}
    assert acc["ce-val"] != acc["ce"] and acc["ce-finetune"] != acc["ce"]


def test_a_state_saved_before_the_new_task_fields_still_loads():
    kwargs = dict(DIGITS, loss="ce")
    env = gym.make("L2T-v0", **kwargs)
    env.reset(seed=0)
    state = env.unwrapped.state_dict()
    for key in ("val_size", "label_noise", "train_split", "finetune_fraction"):
        del state["identity"]["task"][key]
    again = gym.make("L2T-v0", **kwargs)
    again.reset(options={"state": state})
    zero = np.zeros(env.action_space.shape, np.float32)
    assert again.step(zero)[4]["train_loss"] == env.step(zero)[4]["train_loss"]
    with pytest.raises(ValueError, match=r"train_split='train' \(state\) vs 'val' \(env\)"):
        gym.make("L2T-v0", **kwargs, train_split="val").reset(options={"state": state})
