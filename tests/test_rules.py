"""The episode rules (l2t_env/rules.py): written once, used by both envs, and unchanged in effect."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from l2t_env import rules

sys.path.insert(0, str(Path(__file__).parent))
import trajectories  # noqa: E402


@pytest.mark.parametrize("name", sorted(trajectories.SCENARIOS))
def test_single_env_trajectories_are_bit_identical_to_those_recorded_before_the_rules_moved(name):
    recorded = json.loads(trajectories.FILE.read_text())[name]
    assert trajectories.trajectory(name) == recorded


def test_outcome_rewards_penalises_divergence_and_truncates_at_the_budget():
    prev = np.array([[2.0, 0.1], [2.0, 0.1], [2.0, 0.1], [2.0, 0.1]])
    val = np.array([[1.5, 0.3], [np.nan, 0.1], [1.0, 0.5], [1.8, 0.2]])
    evaluated = np.array([True, True, False, True])
    finite = np.array([True, True, True, False])
    t = np.array([3, 3, 3, 10])
    reward, terminated, truncated, diverged = rules.outcome("val_loss_decrease", -10.0, prev, val, evaluated, finite, t, 10)
    assert reward.tolist() == [0.5, -10.0, 0.0, -10.0]
    assert diverged.tolist() == [False, True, False, True] and terminated.tolist() == diverged.tolist()
    assert truncated.tolist() == [False, False, False, False]  # row 3 reached the budget but diverged
    r_acc, *_ = rules.outcome("val_acc_increase", -10.0, prev, val, evaluated, finite, np.array([10, 1, 1, 1]), 10)
    assert r_acc[0] == pytest.approx(0.2)
    r_neg, _, trunc, _ = rules.outcome("neg_val_loss", -10.0, prev, val, evaluated, finite, np.array([10, 1, 1, 1]), 10)
    assert r_neg[0] == -1.5 and trunc.tolist() == [True, False, False, False]


def test_cadences():
    t = np.arange(1, 8)
    assert rules.evaluated(t, 3, 7).tolist() == [False, False, True, False, False, True, True]
    done = t == 7
    assert rules.monitored(t, 2, done).tolist() == [False, True, False, True, False, True, True]
    assert not rules.monitored(t, 0, done).any()


def test_layer_mode_moves_each_group_along_its_normalised_gradient():
    groups = [("a", slice(0, 2)), ("b", slice(2, 5))]
    g = torch.tensor([[3.0, -4.0, 1.0, 1.0, -1.0]])
    d = rules.gradient_direction(g, groups)
    # rms of group a is sqrt(12.5): entries clipped to [-1, 1]; group b has rms 1
    assert torch.allclose(d, torch.tensor([[3 / 12.5**0.5, -1.0, 1.0, 1.0, -1.0]]))
    phi = torch.zeros(1, 5)
    new = rules.phi_after(phi, torch.tensor([[1.0, -0.5]]), "layer", 0.1, groups, lambda: d)
    assert torch.allclose(new, -0.1 * torch.cat([d[:, :2], -0.5 * d[:, 2:]], 1))
    assert torch.equal(rules.phi_after(phi, torch.ones(1, 5), "set", 0.1, groups, lambda: d), torch.ones(1, 5))


def test_bad_action_values_are_refused_with_the_sub_envs_named():
    with pytest.raises(ValueError, match=r"sub-env\(s\) \[1\]"):
        rules.check_action_values(torch.tensor([[0.0], [float("nan")]]), 1.0, batched=True)
    with pytest.raises(ValueError, match=r"span \[-2, 0\], expected within \[-1, 1\]"):
        rules.check_action_values(torch.tensor([-2.0, 0.0]), 1.0, batched=False)
