"""The DLN's LeakyReLU with a constant mask: the same numbers as ``F.leaky_relu`` at every order."""

import torch
import torch.nn.functional as F
from torch.func import vmap

from l2t_env.losses import DynamicLossNetwork, _may_be_differentiated, leaky_relu


def _hypergradient(act, phi: torch.Tensor, family: DynamicLossNetwork, z: torch.Tensor, y: torch.Tensor):
    """d/dphi of |d L / d z|^2: differentiates the gradient, as the look-ahead does."""
    weights = family.weights(phi)
    s = torch.sigmoid(z)
    s_true = s.gather(1, y[:, None]).expand_as(s)
    h = F.linear(torch.stack([s_true, s], -1), weights[0][:, :2], weights[0][:, 2])
    for w in weights[1:]:
        h = F.linear(act(h), w)
    (g,) = torch.autograd.grad(h.mean(), z, create_graph=True)
    (hyper,) = torch.autograd.grad((g * g).sum(), phi)
    return h.mean().detach(), g.detach(), hyper


def test_constant_mask_leaky_relu_matches_autograd_bit_for_bit_to_second_order():
    family = DynamicLossNetwork()
    phi = family.init_params(3, torch.device("cpu"), torch.float32).requires_grad_(True)
    z = torch.randn(25, 10, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = torch.randint(0, 10, (25,), generator=torch.Generator().manual_seed(1))
    plain = _hypergradient(lambda h: F.leaky_relu(h, 0.01), phi, family, z, y)
    masked = _hypergradient(lambda h: leaky_relu(h, 0.01, True), phi, family, z, y)
    for a, b in zip(plain, masked):
        assert torch.equal(a, b)
    assert plain[2].abs().sum() > 0  # the hypergradient is not trivially zero


def test_dln_loss_with_and_without_phi_gradients_agrees():
    family = DynamicLossNetwork()
    phi = family.init_params(0, torch.device("cpu"), torch.float32)
    z = torch.randn(8, 10, generator=torch.Generator().manual_seed(2))
    y = torch.arange(8) % 10
    assert torch.equal(family(phi, z, y), family(phi.clone().requires_grad_(True), z, y).detach())


def test_may_be_differentiated_sees_through_vmap():
    rng = torch.Generator().manual_seed(0)
    p = torch.randn(3, 4, requires_grad=True, generator=rng)
    seen = vmap(lambda q: torch.tensor(_may_be_differentiated(q)))
    assert seen(p).all() and not seen(p.detach()).any()
    assert _may_be_differentiated(p) and not _may_be_differentiated(p.detach())
