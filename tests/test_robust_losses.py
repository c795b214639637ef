"""The robust losses against their formulas (written out independently, in numpy, per example),
the symmetric ones against the symmetry condition, and their use as env loss families and teachers."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import l2t_env  # noqa: F401
from l2t_env import robust_losses as rl
from l2t_env.losses import HyperparameterLoss, make_loss_family

LOGITS = np.array([[2.0, -1.0, 0.5, 0.0], [-0.3, 0.8, 1.5, -2.0], [0.0, 0.0, 0.0, 0.0]])
LABELS = np.array([0, 2, 3])


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def _reference(name: str, z: np.ndarray, y: int, **h) -> float:
    """The per-example loss as the papers write it, one example at a time."""
    p = _softmax(z)
    c = len(z)
    onehot = np.eye(c)[y]
    if name == "ce":
        return -math.log(p[y])
    if name == "mae":
        return float(np.abs(p - onehot).sum())
    if name == "gce":
        return (1 - p[y] ** h["q"]) / h["q"]
    if name == "rce":  # -sum_k p_k log(onehot_k) with log 0 := A
        log_target = np.where(onehot > 0, 0.0, h["A"])
        return float(-(p * log_target).sum())
    if name == "nce":
        return -math.log(p[y]) / -np.log(p).sum()
    if name == "sce":
        return h["alpha"] * _reference("ce", z, y) + h["beta"] * _reference("rce", z, y, A=h["A"])
    if name == "nce_rce":
        return h["alpha"] * _reference("nce", z, y) + h["beta"] * _reference("rce", z, y, A=h["A"])
    if name == "ls":
        target = (1 - h["eps"]) * onehot + h["eps"] / c
        return float(-(target * np.log(p)).sum())
    if name == "boot_soft":
        return float(-((h["beta"] * onehot + (1 - h["beta"]) * p) * np.log(p)).sum())
    if name == "boot_hard":
        hard = np.eye(c)[int(np.argmax(p))]
        return float(-((h["beta"] * onehot + (1 - h["beta"]) * hard) * np.log(p)).sum())
    if name == "focal":
        return -((1 - p[y]) ** h["gamma"]) * math.log(p[y])
    raise KeyError(name)


CASES = [
    ("ce", rl.ce, {}),
    ("mae", rl.mae, {}),
    ("gce", rl.gce, {"q": 0.7}),
    ("gce", rl.gce, {"q": 0.3}),
    ("rce", rl.rce, {"A": -4.0}),
    ("nce", rl.nce, {}),
    ("sce", rl.sce, {"alpha": 0.1, "beta": 1.0, "A": -4.0}),
    ("nce_rce", rl.nce_rce, {"alpha": 1.0, "beta": 1.0, "A": math.log(1e-4)}),
    ("ls", rl.label_smoothing, {"eps": 0.1}),
    ("boot_soft", rl.bootstrap_soft, {"beta": 0.95}),
    ("boot_hard", rl.bootstrap_hard, {"beta": 0.8}),
    ("focal", rl.focal, {"gamma": 2.0}),
]


@pytest.mark.parametrize("name,fn,h", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_loss_matches_its_formula_on_known_logits(name, fn, h):
    got = fn(torch.tensor(LOGITS, dtype=torch.float64), torch.tensor(LABELS), **h).numpy()
    want = [_reference(name, z, int(y), **h) for z, y in zip(LOGITS, LABELS)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", [rl.mae, lambda z, y: rl.rce(z, y, A=-4.0), rl.nce, lambda z, y: rl.gce(z, y, q=1.0)])
def test_symmetric_losses_sum_to_a_constant_over_all_labels(fn):
    z = torch.randn(50, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    totals = sum(fn(z, torch.full((50,), j)) for j in range(7))
    assert torch.allclose(totals, totals[0].expand_as(totals), atol=1e-10)
    # and cross-entropy is not symmetric: the same check must be able to fail
    ce_totals = sum(rl.ce(z, torch.full((50,), j)) for j in range(7))
    assert ce_totals.std() > 0.1


def test_gce_limits_are_ce_and_half_mae():
    z = torch.randn(20, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 5, (20,), generator=torch.Generator().manual_seed(2))
    assert torch.allclose(rl.gce(z, y, q=1e-7), rl.ce(z, y), atol=1e-5)
    assert torch.allclose(rl.gce(z, y, q=1.0), rl.mae(z, y) / 2)


def test_family_phi_is_the_hyperparameters_and_the_loss_differentiates_through_them():
    family = make_loss_family("sce", 10, alpha=0.5, A=-6.0)
    assert isinstance(family, HyperparameterLoss)
    phi = family.init_params(0, torch.device("cpu"), torch.float64)
    assert phi.tolist() == [0.5, 1.0] and [n for n, _ in family.layer_slices()] == ["alpha", "beta"]
    z = torch.tensor(LOGITS, dtype=torch.float64)
    y = torch.tensor(LABELS)
    phi.requires_grad_(True)
    loss = family(phi, z, y)
    (grad,) = torch.autograd.grad(loss, phi)
    # d/d alpha = mean CE, d/d beta = mean RCE with A = -6
    assert torch.allclose(grad, torch.stack([rl.ce(z, y).mean(), rl.rce(z, y, A=-6.0).mean()]))


def test_family_clamps_phi_to_the_valid_range():
    family = make_loss_family("gce", 10)
    z = torch.tensor(LOGITS, dtype=torch.float64)
    y = torch.tensor(LABELS)
    assert torch.equal(family(torch.tensor([5.0], dtype=torch.float64), z, y), rl.gce(z, y, q=1.0).mean())


@pytest.mark.parametrize(
    "name,kwargs,match",
    [("gce", {"q": 0.0}, "q=0.0"), ("gce", {"q": 1.5}, "q=1.5"), ("ls", {"eps": -0.1}, "eps=-0.1"),
     ("sce", {"gamma": 1.0}, "unknown loss_kwargs"), ("focal", {"gamma": float("nan")}, "gamma=nan")],
)
def test_bad_hyperparameters_raise_naming_the_value(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_loss_family(name, 10, **kwargs)


def test_frozen_loss_teacher_trains_on_that_loss_and_rejects_unknown_kwargs():
    from l2t_agents import make_env, make_teacher, run_episode

    teacher = make_teacher("gce", q=0.5)
    assert teacher.env_kwargs["loss"] == "gce" and teacher.env_kwargs["loss_kwargs"] == {"q": 0.5}
    env = make_env(teacher, "digits-mlp", teaching_steps=2, device="cpu")
    record = run_episode(env, teacher, 0)
    assert env.unwrapped.phi.tolist() == [0.5]  # frozen: never moved
    # the same student, batches and loss by hand: gym.make with loss="gce", q=0.5 and zero actions
    plain = gym.make("L2T-v0", task="digits-mlp", loss="gce", loss_kwargs={"q": 0.5}, lookahead="off", teaching_steps=2, device="cpu")
    plain.reset(seed=0)
    for _ in range(2):
        *_, info = plain.step(np.zeros(1, dtype=np.float32))
    assert info["test_acc"] == record.final["test_acc"]
    with pytest.raises(ValueError, match="unknown teacher kwargs"):
        make_teacher("gce", p=0.5)
