"""Tasks with headroom (noisy digits, MNIST-1D) and the DLN's initialisation choices."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import l2t_env  # noqa: F401  (registers L2T-v0)
from l2t_bench.options import merge_overrides, parse_overrides
from l2t_env import dln_init, mnist1d_data
from l2t_env.data import split_data
from l2t_env.losses import DynamicLossNetwork
from l2t_env.tasks import load_raw_data, load_task

REPO = Path(__file__).resolve().parent.parent
SMALL_FIT = {"steps": 40, "rows": 64}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test gets an empty disk cache and empty memory caches."""
    monkeypatch.setenv("L2T_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(dln_init, "_MEMORY", {})
    monkeypatch.setattr(mnist1d_data, "_MEMORY", {})


# ----------------------------------------------------------------------------- noisy digits
def _splits(task: str, seed: int, **overrides):
    cfg = load_task(task, **overrides)
    return split_data(load_raw_data(cfg), cfg.val_fraction, seed, torch.device("cpu"), torch.float32)


def test_noisy_labels_touch_only_the_training_split_and_are_fixed_by_the_seed():
    clean = _splits("digits-mlp", 3)
    noisy = _splits("digits-mlp-noisy", 3)
    again = _splits("digits-mlp-noisy", 3)
    other = _splits("digits-mlp-noisy", 4)
    # same split, same inputs; val and test labels untouched; the clean training labels are kept
    for name in ("x_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(noisy, name), getattr(clean, name)), name
    assert torch.equal(noisy.y_train_clean, clean.y_train)
    assert clean.y_train_clean is None
    assert not torch.equal(noisy.y_train, clean.y_train)
    assert torch.equal(noisy.y_train, again.y_train)
    changed, changed_other = noisy.y_train != clean.y_train, other.y_train != other.y_train_clean
    assert not torch.equal(changed, changed_other)


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6])
def test_noise_rate_is_the_stated_one(rate):
    """Replaced with probability p by a uniform class of 10: about 0.9 p of the labels change."""
    fractions = []
    for seed in range(5):
        s = _splits("digits-mlp-noisy", seed, dataset_kwargs={"noise": rate})
        fractions.append((s.y_train != s.y_train_clean).float().mean().item())
        # the drawn classes are uniform: every class appears among the changed labels
        assert set(s.y_train[s.y_train != s.y_train_clean].tolist()) == set(range(10))
    assert abs(np.mean(fractions) - 0.9 * rate) < 0.02, fractions


def test_noise_free_task_keeps_its_split_and_zero_noise_changes_nothing():
    clean = _splits("digits-mlp", 5)
    zero = _splits("digits-mlp-noisy", 5, dataset_kwargs={"noise": 0.0})
    assert torch.equal(zero.y_train, clean.y_train) and zero.y_train_clean is None


@pytest.mark.parametrize("noise", [1.5, -0.1, "lots", True])
def test_bad_noise_rate_raises_naming_the_range(noise):
    with pytest.raises(ValueError, match=r"noise=.*expected a number in \[0, 1\]"):
        load_raw_data(load_task("digits-mlp-noisy", dataset_kwargs={"noise": noise}))


def test_noisy_env_episode_is_reproducible():
    def run(seed):
        env = gym.make("L2T-v0", task="digits-mlp-noisy", loss="ce", lookahead="off", teaching_steps=2)
        env.reset(seed=seed)
        labels = env.unwrapped.splits.y_train.clone()
        out = [env.step(np.zeros(0, np.float32))[1] for _ in range(2)]
        return labels, out

    (la, ra), (lb, rb) = run(7), run(7)
    assert torch.equal(la, lb) and ra == rb


# ----------------------------------------------------------------------------- MNIST-1D
def test_mnist1d_builds_offline_and_is_cached(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise AssertionError("MNIST-1D must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    cfg = load_task("mnist1d-mlp")
    raw = load_raw_data(cfg)
    assert raw.x_pool.shape == (4000, 40) and raw.x_test.shape == (1000, 40) and raw.num_classes == 10
    assert sorted(raw.y_pool.unique().tolist()) == list(range(10))
    assert (tmp_path / "cache" / "mnist1d" / "seed42.pt").is_file()
    # served from disk in a fresh process state: the same tensors
    monkeypatch.setattr(mnist1d_data, "_MEMORY", {})
    monkeypatch.setattr(mnist1d_data, "generate", lambda seed: pytest.fail("regenerated despite the disk cache"))
    again = load_raw_data(cfg)
    assert torch.equal(again.x_pool, raw.x_pool) and torch.equal(again.y_test, raw.y_test)
    cnn = load_raw_data(load_task("mnist1d-cnn"))
    assert cnn.x_pool.shape == (4000, 1, 40) and torch.equal(cnn.x_pool[:, 0], raw.x_pool)


def test_mnist1d_seed_changes_the_data_and_leaves_global_rngs_alone():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    raw = load_raw_data(load_task("mnist1d-mlp", dataset_kwargs={"data_seed": 1}))
    assert np.random.rand() == expected
    default = load_raw_data(load_task("mnist1d-mlp"))
    assert not torch.equal(raw.x_pool, default.x_pool)


def test_mnist1d_cnn_task_trains_a_step():
    env = gym.make("L2T-v0", task="mnist1d-cnn", loss="ce", lookahead="off", teaching_steps=1)
    env.reset(seed=0)
    _, _, _, truncated, info = env.step(np.zeros(0, np.float32))
    assert truncated and 0.0 <= info["test_acc"] <= 1.0


def test_missing_mnist1d_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ImportError, match=r"l2t-env\[mnist1d\]"):
        load_raw_data(load_task("mnist1d-mlp"))


def test_list_shows_the_new_tasks():
    out = subprocess.run(
        [sys.executable, "-c", "from l2t_bench.cli import main; raise SystemExit(main(['list']))"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for name in ("digits-mlp-noisy", "mnist1d-mlp", "mnist1d-cnn"):
        assert name in out.stdout


# ----------------------------------------------------------------------------- DLN inits
def _init(seed: int = 0, **kwargs) -> torch.Tensor:
    return DynamicLossNetwork(**kwargs).init_params(seed, torch.device("cpu"), torch.float32)


def test_kaiming_is_the_default_and_deterministic_per_seed():
    assert torch.equal(_init(3), _init(3, init="kaiming"))
    assert not torch.equal(_init(3), _init(4))
    assert torch.equal(_init(3, init_seed=9), _init(4, init_seed=9))


def test_ce_init_is_deterministic_per_seed_and_cached(monkeypatch, tmp_path):
    calls = []
    real_fit = dln_init._fit
    monkeypatch.setattr(dln_init, "_fit", lambda *a: calls.append(a[2]) or real_fit(*a))
    first = _init(1, init="ce", fit=SMALL_FIT)
    assert torch.equal(first, _init(1, init="ce", fit=SMALL_FIT)) and calls == [1]
    # a fresh process (empty memory cache) reads it from disk; an empty disk refits the same bits
    monkeypatch.setattr(dln_init, "_MEMORY", {})
    assert torch.equal(first, _init(1, init="ce", fit=SMALL_FIT)) and calls == [1]
    monkeypatch.setattr(dln_init, "_MEMORY", {})
    monkeypatch.setenv("L2T_CACHE_DIR", str(tmp_path / "other"))
    assert torch.equal(first, _init(1, init="ce", fit=SMALL_FIT)) and calls == [1, 1]
    assert not torch.equal(first, _init(2, init="ce", fit=SMALL_FIT))
    assert not torch.equal(first, _init(1, fit=SMALL_FIT))


TINY_TARGET_FIT = {"steps": 20, "examples": 16}


def _target_init(seed: int = 0, **kwargs) -> torch.Tensor:
    return DynamicLossNetwork(num_classes=10, **kwargs).init_params(seed, torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("name, init_kwargs", [("gce", {}), ("sce", {"alpha": 0.5}), ("nce+rce", {})])
def test_robust_loss_init_is_deterministic_per_seed_and_cached(monkeypatch, tmp_path, name, init_kwargs):
    calls = []
    real_fit = dln_init._fit_target
    monkeypatch.setattr(dln_init, "_fit_target", lambda *a: calls.append(a[2]) or real_fit(*a))
    kwargs = {"init": name, "init_kwargs": init_kwargs, "fit": TINY_TARGET_FIT}
    first = _target_init(1, **kwargs)
    assert torch.equal(first, _target_init(1, **kwargs)) and calls == [1]
    # a fresh process (empty memory cache) reads it from disk; an empty disk refits the same bits
    monkeypatch.setattr(dln_init, "_MEMORY", {})
    assert torch.equal(first, _target_init(1, **kwargs)) and calls == [1]
    monkeypatch.setattr(dln_init, "_MEMORY", {})
    monkeypatch.setenv("L2T_CACHE_DIR", str(tmp_path / "other"))
    assert torch.equal(first, _target_init(1, **kwargs)) and calls == [1, 1]
    assert not torch.equal(first, _target_init(2, **kwargs))
    assert not torch.equal(first, dln_init.kaiming_init(DynamicLossNetwork().shapes, 1).float())


def test_robust_loss_init_depends_on_the_target_its_kwargs_and_the_classes():
    gce = _target_init(0, init="gce", fit=TINY_TARGET_FIT)
    assert torch.equal(gce, _target_init(0, init="gce", init_kwargs={"q": 0.7}, fit=TINY_TARGET_FIT))  # the default q
    assert not torch.equal(gce, _target_init(0, init="gce", init_kwargs={"q": 0.3}, fit=TINY_TARGET_FIT))
    assert not torch.equal(gce, _target_init(0, init="sce", fit=TINY_TARGET_FIT))
    five = DynamicLossNetwork(num_classes=5, init="gce", fit=TINY_TARGET_FIT).init_params(0, torch.device("cpu"), torch.float32)
    assert not torch.equal(gce, five)


@pytest.mark.parametrize("name", ["gce", "sce"])
def test_robust_loss_init_fits_the_targets_logit_gradient(name):
    """The documented objective: the DLN's per-example logit gradients move towards the target's."""
    family = DynamicLossNetwork(num_classes=10, init=name, fit={"steps": 250, "examples": 32})
    fitted = family.init_params(0, torch.device("cpu"), torch.float64)
    kaiming = dln_init.kaiming_init(family.shapes, 0)
    z, y = dln_init.draw_logits(torch.Generator().manual_seed(99), 1024, 10, 3.0, 6.0)
    before = dln_init.gradient_agreement(family, kaiming, family.target_loss, z, y)
    after = dln_init.gradient_agreement(family, fitted, family.target_loss, z, y)
    # closer than the zero gradient (rel_error 1) and than the Kaiming start; aligned where it was not
    assert after["rel_error"] < min(0.7, 0.5 * before["rel_error"]), (before, after)
    assert after["cosine"] > 0.6 > 0.0 > before["cosine"], (before, after)


def test_gradient_agreement_is_one_for_the_target_itself_and_sees_example_weights():
    class Exact:  # a "DLN" whose batch mean is the target's: its gradients are the target's
        def __call__(self, phi, z, y):
            return dln_init.ROBUST_LOSSES["gce"].fn(z, y).mean() + 0 * phi.sum()

    z, y = dln_init.draw_logits(torch.Generator().manual_seed(1), 256, 10, 3.0, 6.0)
    got = dln_init.gradient_agreement(Exact(), torch.zeros(1), dln_init.ROBUST_LOSSES["gce"].fn, z, y)
    assert got["cosine"] == pytest.approx(1.0) and got["example_cosine"] == pytest.approx(1.0) and got["rel_error"] < 1e-20
    # GCE's gradient is CE's times p_y^q example by example: same per-example directions, other weights
    from l2t_env.robust_losses import ce, gce
    vs_ce = dln_init.gradient_agreement(lambda phi, zz, yy: gce(zz, yy).mean(), torch.zeros(1), ce, z, y)
    assert vs_ce["example_cosine"] == pytest.approx(1.0) and vs_ce["cosine"] < 0.9


def test_env_robust_loss_init_through_loss_kwargs():
    kwargs = {"init": "gce", "init_kwargs": {"q": 0.5}, "init_seed": 0, "fit": TINY_TARGET_FIT}
    env = gym.make("L2T-v0", loss_kwargs=kwargs, lookahead="off", teaching_steps=1)
    env.reset(seed=1)
    assert torch.equal(env.unwrapped.phi, _target_init(0, **kwargs))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"init": "gce", "init_kwargs": {"q": 0.0}}, r"gce: q=0.0, expected a finite number in \[0.001, 1.0\]"),
        ({"init": "gce", "init_kwargs": {"p": 0.5}}, r"dln init_kwargs of init='gce': gce: unknown loss_kwargs \['p'\]; valid: \['q'\]"),
        ({"init": "ce", "init_kwargs": {"q": 0.5}}, r"init_kwargs=\{'q': 0.5\} given for init='ce'; .*expected init in"),
        ({"init": "gce", "fit": {"rows": 5}}, r"unknown key\(s\) \['rows'\]; valid: \['balance', 'examples', 'logit_std', 'lr', 'margin', 'shift', 'steps'\]"),
        ({"init": "gce", "fit": {"margin": -1.0}}, r"margin=-1.0, expected a finite number >= 0"),
        ({"init": "gce", "num_classes": None}, r"init='gce' needs num_classes \(an integer >= 2\), got None"),
    ],
)
def test_bad_robust_loss_inits_raise(kwargs, match):
    kwargs = {"num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        DynamicLossNetwork(**kwargs)


def _gradient_error(phi: torch.Tensor, family: DynamicLossNetwork) -> float:
    # logits of moderate size, where sigmoid(z) is not saturated and the target is reachable
    z = torch.randn(4096, 2, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    got = dln_init.pair_logit_grads(lambda s: family.score_pairs(phi, s), z)
    return (got - dln_init.pairwise_logistic_grads(z, 2.0)).pow(2).mean().item()


def test_ce_init_fits_the_pairwise_logistic_gradient():
    """The documented target: the DLN's logit derivatives move towards 2*log(1+exp(z_j - z_y))'s."""
    family = DynamicLossNetwork(init="ce", fit={"steps": 600, "rows": 128})
    kaiming = dln_init.kaiming_init(family.shapes, 0)
    fitted = family.init_params(0, torch.device("cpu"), torch.float64)
    before, after = _gradient_error(kaiming, family), _gradient_error(fitted, family)
    assert after < 0.1 * before, (before, after)
    # and the student's gradient at equal logits is cross-entropy's: -(C-1)/C on the true class
    logits = torch.zeros(1, 10, requires_grad=True)
    family(fitted.float(), logits, torch.tensor([3])).backward()
    ce_grad = torch.full((10,), 0.1)
    ce_grad[3] = -0.9
    assert torch.allclose(logits.grad[0], ce_grad, atol=0.15), logits.grad


def test_score_pairs_matches_the_loss_rows():
    family = DynamicLossNetwork()
    phi = _init(0)
    rng = torch.Generator().manual_seed(0)
    logits, y = torch.randn(6, 10, generator=rng), torch.randint(0, 10, (6,), generator=rng)
    s = torch.sigmoid(logits)
    rows = torch.stack([s.gather(1, y[:, None]).expand_as(s), s], dim=-1)
    scores = family.score_pairs(phi, rows.reshape(-1, 2)).view(6, 10)
    scores = scores * torch.ones_like(s).scatter_(1, y[:, None], 0.0)
    assert torch.allclose(scores.mean(), family(phi, logits, y), atol=1e-6)


def test_tensor_and_file_inits_round_trip(tmp_path):
    phi = torch.randn(5000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_init(0, init=phi), phi) and torch.equal(_init(5, init=phi), phi)
    path = tmp_path / "dln.pt"
    torch.save(phi, path)
    assert torch.equal(_init(0, init=str(path)), phi) and torch.equal(_init(0, init=path), phi)
    torch.save({"phi": phi.double()}, tmp_path / "dict.pt")
    assert torch.equal(_init(0, init=str(tmp_path / "dict.pt")), phi)
    # a phi saved from an env run starts the next env there
    env = gym.make("L2T-v0", loss_kwargs={"init": str(path)}, lookahead="off", teaching_steps=1)
    env.reset(seed=3)
    assert torch.equal(env.unwrapped.phi, phi)
    torch.save(env.unwrapped.phi, tmp_path / "saved.pt")
    env2 = gym.make("L2T-v0", loss_kwargs={"init": str(tmp_path / "saved.pt")}, lookahead="off", teaching_steps=1)
    env2.reset(seed=4)
    assert torch.equal(env2.unwrapped.phi, env.unwrapped.phi)


def test_env_ce_init_through_loss_kwargs():
    env = gym.make("L2T-v0", loss_kwargs={"init": "ce", "init_seed": 0, "fit": SMALL_FIT}, lookahead="off", teaching_steps=1)
    env.reset(seed=1)
    a = env.unwrapped.phi.clone()
    env.reset(seed=2)  # init_seed fixes the init for every episode seed
    assert torch.equal(env.unwrapped.phi, a)
    assert torch.equal(a, _init(0, init="ce", fit=SMALL_FIT))


@pytest.mark.parametrize(
    "init, match",
    [
        ("xavier", r"init='xavier' is neither a known name nor an existing file; expected 'kaiming', 'ce', a tensor of 5000.*'gce', 'sce'"),
        ("/no/such/dln.pt", r"neither a known name nor an existing file; expected 'kaiming', 'ce'"),
        (torch.zeros(4999), r"4999 values; expected .*a tensor of 5000 finite values"),
        (torch.full((5000,), math.nan), r"non-finite .*expected .*5000 finite values"),
        (torch.zeros(5000, dtype=torch.long), r"non-float .*expected"),
        (3, r"init=3; expected 'kaiming', 'ce'"),
    ],
)
def test_bad_inits_raise_naming_the_expected_form(init, match):
    with pytest.raises(ValueError, match=match):
        DynamicLossNetwork(init=init)


def test_bad_files_and_options_raise(tmp_path):
    path = tmp_path / "short.pt"
    torch.save(torch.zeros(10), path)
    with pytest.raises(ValueError, match=r"short.pt.*10 values; expected"):
        DynamicLossNetwork(init=str(path))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['step'\]; valid: \['balance', 'logit_std', 'lr', 'rows', 'steps', 'target_scale'\]"):
        DynamicLossNetwork(init="ce", fit={"step": 5})
    with pytest.raises(ValueError, match=r"steps=0, expected a positive integer"):
        DynamicLossNetwork(init="ce", fit={"steps": 0})
    with pytest.raises(ValueError, match=r"init_seed=-1, expected None or an integer >= 0"):
        DynamicLossNetwork(init_seed=-1)


def test_dotted_cli_overrides_reach_into_loss_kwargs():
    got = parse_overrides(["loss_kwargs.init=ce", "loss_kwargs.fit.steps=10", "reward=neg_val_loss"], "env")
    assert got == {"loss_kwargs": {"init": "ce", "fit": {"steps": 10}}, "reward": "neg_val_loss"}
    base = {"loss_kwargs": {"hidden": [40, 40]}, "lookahead": 1}
    assert merge_overrides(base, got) == {
        "loss_kwargs": {"hidden": [40, 40], "init": "ce", "fit": {"steps": 10}}, "lookahead": 1, "reward": "neg_val_loss",
    }
    assert base == {"loss_kwargs": {"hidden": [40, 40]}, "lookahead": 1}
    with pytest.raises(SystemExit, match="key.subkey=value"):
        parse_overrides(["loss_kwargs..init=ce"], "env")


def test_checkpoint_keeps_the_noisy_labels():
    env = gym.make("L2T-v0", task="digits-mlp-noisy", loss="ce", lookahead="off", teaching_steps=3)
    env.reset(seed=2)
    env.step(np.zeros(0, np.float32))
    state = env.unwrapped.state_dict()
    other = gym.make("L2T-v0", task="digits-mlp-noisy", loss="ce", lookahead="off", teaching_steps=3)
    other.reset(options={"state": state})
    a, b = env.unwrapped.splits, other.unwrapped.splits
    assert torch.equal(a.y_train, b.y_train) and torch.equal(a.y_train_clean, b.y_train_clean)
    assert not torch.equal(b.y_train, b.y_train_clean)
    assert env.step(np.zeros(0, np.float32))[1] == other.step(np.zeros(0, np.float32))[1]


def test_balance_penalty_evens_the_row_sums():
    """``fit.balance`` pushes each row's logit derivatives to sum to zero, as the target's do."""
    z = torch.randn(2048, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 3.0

    def row_sum_error(fit: dict) -> float:
        family = DynamicLossNetwork(init="ce", fit=fit)
        phi = family.init_params(0, torch.device("cpu"), torch.float64)
        return dln_init.pair_logit_grads(lambda s: family.score_pairs(phi, s), z).sum(dim=1).pow(2).mean().item()

    plain, balanced = row_sum_error({"steps": 150, "rows": 128}), row_sum_error({"steps": 150, "rows": 128, "balance": 10.0})
    assert balanced < 0.5 * plain, (plain, balanced)
    with pytest.raises(ValueError, match=r"balance=-1.0, expected a finite number >= 0"):
        DynamicLossNetwork(init="ce", fit={"balance": -1.0})
