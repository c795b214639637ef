"""The ``dfm`` loss family (fused metric) and the env pieces its teachers use: ``action_mode="set"``,
``unrolled_val_loss(measure=...)`` and ``batch_logits``."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch
import torch.nn.functional as F

import l2t_env  # noqa: F401
from l2t_env import robust_losses
from l2t_env.fused_metric import DEFAULT_METRICS, METRICS, metric_values
from l2t_env.losses import FusedMetricLoss, make_loss_family

TINY = dict(teaching_steps=3, unroll_steps=3, batch_size=8, val_batch_size=16, student_kwargs={"hidden": [16]})


def batch(seed: int = 0, n: int = 12, c: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(n, c, generator=gen, dtype=torch.float64), torch.randint(0, c, (n,), generator=gen)


def direct(metric: str, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each metric computed from its textbook definition, sample by sample."""
    c = z.shape[1]
    out = []
    for zi, yi in zip(z, y):
        p = torch.softmax(zi, 0)
        onehot = F.one_hot(yi, c).double()
        if metric == "ce":
            out.append(-torch.log(p[yi]))
        elif metric == "brier":
            out.append(((p - onehot) ** 2).sum())
        elif metric == "focal":
            out.append(-((1 - p[yi]) ** 2) * torch.log(p[yi]))
        elif metric == "hinge":
            out.append(sum(max(0.0, 1 - zi[yi] + zi[j]) for j in range(c) if j != yi) / c)
        elif metric == "kl":
            q = 0.9 * onehot + 0.1 / c
            out.append((q * (q.log() - p.log())).sum())
        elif metric == "gce":
            out.append((1 - p[yi] ** 0.7) / 0.7)
        elif metric == "rce":  # -sum_k p_k log(onehot_k) with log 0 := -4
            out.append(-(p * torch.where(onehot > 0, 0.0, -4.0)).sum())
        elif metric == "nce":
            out.append(torch.log(p[yi]) / torch.log(p).sum())
    return torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in out]).mean()


@pytest.mark.parametrize("metric", METRICS)
def test_one_hot_weight_is_exactly_that_metric(metric):
    family = make_loss_family("dfm", 10, metrics=METRICS)
    z, y = batch()
    phi = torch.zeros(len(METRICS), dtype=torch.float64)
    phi[family.metrics.index(metric)] = 1.0
    assert torch.allclose(family(phi, z, y), direct(metric, z, y), rtol=1e-10, atol=1e-12)
    # and bit for bit the metric's own batch mean
    assert torch.equal(family(phi, z, y), metric_values(z, y, (metric,))[0])


def test_default_metrics_are_the_first_five_and_the_robust_ones_opt_in():
    """Existing dfm results depend on the default's five weights; the robust members are opt-in."""
    assert DEFAULT_METRICS == ("ce", "brier", "focal", "hinge", "kl") == METRICS[:5]
    assert make_loss_family("dfm", 10).metrics == DEFAULT_METRICS
    assert {"gce", "rce", "nce"} <= set(METRICS)


@pytest.mark.parametrize(
    "metric, fn, options",
    [
        ("gce", lambda z, y: robust_losses.gce(z, y, q=0.7), {}),
        ("gce", lambda z, y: robust_losses.gce(z, y, q=0.3), {"gce_q": 0.3}),
        ("rce", lambda z, y: robust_losses.rce(z, y, A=-4.0), {}),
        ("rce", lambda z, y: robust_losses.rce(z, y, A=-9.2103), {"rce_A": -9.2103}),
        ("nce", robust_losses.nce, {}),
    ],
)
def test_robust_members_are_the_robust_losses_batch_mean(metric, fn, options):
    z, y = batch(4)
    (value,) = metric_values(z, y, (metric,), **options)
    assert torch.equal(value, fn(z, y).mean())
    family = FusedMetricLoss(metrics=("ce", metric), **options)
    assert torch.equal(family(torch.tensor([0.0, 1.0], dtype=torch.float64), z, y), fn(z, y).mean())


@pytest.mark.parametrize("metric", ["gce", "nce"])
def test_robust_members_second_derivatives_match_finite_differences(metric):
    """The look-ahead differentiates the fused loss's gradient: check d2 metric / dz2 in float64."""
    z, y = batch(5, n=4, c=5)
    z = z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda zz: metric_values(zz, y, (metric,)), (z,))
    assert torch.autograd.gradgradcheck(lambda zz: metric_values(zz, y, (metric,)), (z,))


def test_hinge_agrees_with_torch_and_the_sum_is_linear_in_the_weights():
    z, y = batch(1)
    (hinge,) = metric_values(z, y, ("hinge",))
    assert torch.allclose(hinge, F.multi_margin_loss(z, y, margin=1.0))
    family = FusedMetricLoss()
    w = torch.tensor([0.5, -1.0, 2.0, 0.25, 3.0], dtype=torch.float64)
    values = torch.stack([direct(m, z, y) for m in DEFAULT_METRICS])
    assert torch.allclose(family(w, z, y), (w * values).sum(), rtol=1e-10)


def test_family_shape_init_and_options():
    family = FusedMetricLoss(metrics=("kl", "ce"), focal_gamma=0.0, smoothing=0.2)
    assert family.n_params == 2 and [name for name, _ in family.layer_slices()] == ["kl", "ce"]
    assert family.init_params(0, torch.device("cpu"), torch.float32).tolist() == [0.0, 1.0]  # starts as CE
    z, y = batch(2)
    # focal with gamma = 0 is CE
    assert torch.allclose(metric_values(z, y, ("focal", "ce"), focal_gamma=0.0).diff(), torch.zeros(1, dtype=torch.float64))
    # KL to the 0.2-smoothed target, from its definition
    q = torch.full((len(y), 10), 0.02, dtype=torch.float64).scatter_(1, y[:, None], 0.82)
    expected = (q * (q.log() - F.log_softmax(z, 1))).sum(1).mean()
    assert torch.allclose(family(torch.tensor([1.0, 0.0], dtype=torch.float64), z, y), expected)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"metrics": ("ce", "nope")}, r"metrics=\['ce', 'nope'\], expected distinct names from \['ce', 'brier'"),
        ({"metrics": ("ce", "ce")}, r"expected distinct names"),
        ({"smoothing": 1.0}, r"smoothing=1.0, expected in \[0, 1\)"),
        ({"hinge_margin": 0}, r"hinge_margin=0, expected > 0"),
        ({"focal_gamma": -1}, r"focal_gamma=-1, expected >= 0"),
        ({"metrics": ("gce",), "gce_q": 0.0}, r"gce_q=0.0, expected in \(0, 1\]"),
        ({"metrics": ("rce",), "rce_A": 4.0}, r"rce_A=4.0, expected a finite number < 0"),
    ],
)
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FusedMetricLoss(**kwargs)


def set_env(**kwargs) -> gym.Env:
    return gym.make("L2T-v0", **{**TINY, "loss": "dfm", "action_mode": "set", "lookahead": "off", "dtype": "float64", **kwargs})


def test_set_mode_commits_phi_and_reuses_the_lookahead():
    env = set_env()
    env.reset(seed=0)
    core = env.unwrapped
    assert env.action_space.shape == (5,) and "loss_grad" not in env.observation_space.spaces
    w = torch.tensor([0.3, 0.2, 0.1, 0.2, 0.2], dtype=torch.float64, requires_grad=True)
    val = core.unrolled_val_loss(w)
    (g,) = torch.autograd.grad(val, w)  # second order through the hinge and every other metric
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    _, _, _, _, info = env.step(w.detach().numpy())
    assert info["reused_unroll"] and torch.equal(core.phi, w.detach())
    # the same env fed by commit_phi gives the same student
    env2 = set_env()
    env2.reset(seed=0)
    env2.unwrapped.commit_phi(w.detach())
    for a, b in zip(core.params, env2.unwrapped.params):
        assert torch.equal(a, b)


def test_set_mode_rejects_out_of_range_and_wrong_shapes_unchanged():
    env = set_env()
    env.reset(seed=0)
    before = env.unwrapped.phi.clone()
    with pytest.raises(ValueError, match=r"expected within \[-1e\+06, 1e\+06\]"):
        env.step(torch.tensor([2e6, 0, 0, 0, 0], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"expected \(5,\) \(the new loss parameters phi\)"):
        env.step(torch.zeros(4, dtype=torch.float64))
    assert torch.equal(env.unwrapped.phi, before) and env.unwrapped.t == 0


@pytest.mark.parametrize("checkpoint", [False, True])
def test_unrolled_measure_replaces_the_validation_ce(checkpoint):
    env = set_env(checkpoint_unroll=checkpoint)
    env.reset(seed=3)
    core = env.unwrapped
    w = core.phi.clone().requires_grad_(True)
    ce = core.unrolled_val_loss(w)
    same = core.unrolled_val_loss(w, measure=F.cross_entropy)
    assert torch.equal(ce.detach(), same.detach())
    doubled = core.unrolled_val_loss(w, measure=lambda z, y: 2 * F.cross_entropy(z, y) + z.shape[0])
    assert torch.allclose(doubled.detach(), 2 * ce.detach() + core.config.val_batch_size)
    (g1,) = torch.autograd.grad(same, w)
    (g2,) = torch.autograd.grad(doubled, w)
    assert torch.allclose(g2, 2 * g1) and g1.abs().sum() > 0


def test_batch_logits_reads_the_next_batches_without_touching_the_student():
    env = set_env()
    env.reset(seed=0)
    core = env.unwrapped
    params = [p.clone() for p in core.params]
    logits, y = core.batch_logits()
    assert logits.shape == (3 * 8, 10) and torch.equal(y, core._next.y.flatten()) and not logits.requires_grad
    assert all(torch.equal(a, b) for a, b in zip(params, core.params))
    expected = core.student(core.params, core.buffers, core._next.x[1])
    assert torch.allclose(logits[8:16], expected)
    assert math.isfinite(float(logits.sum()))
    first, y1 = core.batch_logits(batches=1)
    assert torch.equal(first, logits[:8]) and torch.equal(y1, y[:8])
    with pytest.raises(ValueError, match=r"batches=4, expected 1..3"):
        core.batch_logits(batches=4)


def test_second_order_gradient_through_the_fused_metric_matches_finite_differences():
    """d(validation loss after an unroll trained with the fused metric) / d(metric weights): second
    order through every metric, against central differences in float64."""
    env = set_env()
    env.reset(seed=0)
    core = env.unwrapped
    w0 = torch.tensor([0.3, 0.2, 0.1, 0.2, 0.2], dtype=torch.float64)
    w = w0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(core.unrolled_val_loss(w), w)
    direction = torch.tensor([1.0, -0.5, 0.25, -1.0, 0.5], dtype=torch.float64)
    eps = 1e-6
    up, down = (core.unrolled_val_loss(w0 + s * eps * direction).item() for s in (1.0, -1.0))
    analytic = float(g @ direction)
    assert abs(analytic) > 1e-8, analytic
    assert (up - down) / (2 * eps) == pytest.approx(analytic, rel=1e-5, abs=1e-10)
