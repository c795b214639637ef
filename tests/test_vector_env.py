"""The native vector env: sub-env i follows the single env with the same seed and actions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import data_equivalence

import l2t_env  # noqa: F401  (registers L2T-v0)
from l2t_env.tasks import RawData

N = 3
DIGITS = dict(task="digits-mlp", unroll_steps=2, teaching_steps=20, device="cpu")


def _tiny_resnet_kwargs() -> dict:
    """A BatchNorm ResNet-8 with crop-flip augmentation on small random 3x8x8 images."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(140, 3, 8, 8, generator=gen)
    y = torch.randint(0, 4, (140,), generator=gen)
    data = RawData.from_tensors(x[:100], y[:100], x[100:], y[100:], num_classes=4)
    return dict(
        task="random-cifar10-resnet8", dataset=data, dataset_kwargs={}, augment="crop-flip",
        batch_size=6, unroll_steps=2, teaching_steps=20, val_batch_size=10, reward_val_size=10, device="cpu",
    )


def make_vec(n: int = N, **kwargs) -> gym.vector.VectorEnv:
    return gym.make_vec("L2T-v0", num_envs=n, vectorization_mode="vector_entry_point", **kwargs)


def _close(a, b, name: str, rtol: float = 2e-4, atol: float = 2e-5) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=rtol, atol=atol, err_msg=name)


def _assert_follows_singles(kwargs: dict, batching: str, seed: int = 7) -> None:
    venv = make_vec(batching=batching, **kwargs)
    assert venv.unwrapped.batching == batching
    singles = [gym.make("L2T-v0", **kwargs) for _ in range(N)]
    obs, info = venv.reset(seed=seed)
    single_obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    rng = np.random.default_rng(0)
    for t in range(kwargs["teaching_steps"]):
        for key in obs:
            for i in range(N):
                _close(obs[key][i], single_obs[i][key], f"step {t} obs {key} sub-env {i}")
        actions = rng.uniform(-1, 1, venv.action_space.shape).astype(np.float32)
        obs, reward, terminated, truncated, info = venv.step(actions)
        results = [env.step(actions[i]) for i, env in enumerate(singles)]
        single_obs = [r[0] for r in results]
        _close(reward, [r[1] for r in results], f"step {t} rewards", atol=1e-5)
        assert terminated.tolist() == [r[2] for r in results]
        assert truncated.tolist() == [r[3] for r in results]
        for key in ("train_loss", "val_acc", "teaching_step", "student_steps"):
            _close(info[key], [r[4][key] for r in results], f"step {t} info {key}")
    assert truncated.all() and info["_final"].all()
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"):
        _close(info["final"][key], [r[4]["final"][key] for r in results], f"final {key}")
    # NEXT_STEP autoreset: the step after the end resets, ignores the action, rewards 0
    obs, reward, terminated, truncated, info = venv.step(np.zeros(venv.action_space.shape, np.float32))
    assert (obs["student"][:, 0] == 0).all() and (reward == 0).all() and not (terminated | truncated).any()
    assert "train_loss" not in info and info["_val_loss"].all()
    for i, env in enumerate(singles):
        reset_obs, _ = env.reset()  # the single env's next reset, unseeded: the same stream goes on
        _close(obs["loss_params"][i], reset_obs["loss_params"], f"autoreset sub-env {i}")


def test_vector_digits_follows_single_envs_with_lookahead():
    _assert_follows_singles(DIGITS, "vmap")


def test_vector_batchnorm_resnet_with_augmentation_follows_single_envs():
    _assert_follows_singles({**_tiny_resnet_kwargs(), "lookahead": "off"}, "vmap")


@pytest.mark.slow
def test_vector_batchnorm_resnet_lookahead_follows_single_envs():
    _assert_follows_singles(_tiny_resnet_kwargs(), "vmap")


def test_loop_fallback_follows_single_envs():
    _assert_follows_singles({**DIGITS, "teaching_steps": 3, "lookahead": 1}, "loop")


def test_spaces_metadata_and_determinism():
    venv = make_vec(**{**DIGITS, "teaching_steps": 3})
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    assert venv.action_space.shape == (N, 5000)
    assert venv.observation_space["student"].shape == (N, 8)
    obs1, _ = venv.reset(seed=3)
    assert venv.observation_space.contains(obs1)
    actions = venv.action_space.sample()
    step1 = venv.step(actions)
    obs2, _ = venv.reset(seed=3)
    assert data_equivalence(obs1, obs2, exact=True)
    step2 = venv.step(actions)
    assert data_equivalence(step1, step2, exact=True)
    assert venv.observation_space.contains(step2[0])


def test_reset_mask_touches_only_the_masked_sub_env():
    kwargs = {**DIGITS, "teaching_steps": 5, "lookahead": "off"}
    a, b = make_vec(**kwargs), make_vec(**kwargs)
    a.reset(seed=0)
    b.reset(seed=0)
    actions = np.full(a.action_space.shape, 0.3, np.float32)
    a.step(actions)
    b.step(actions)
    obs, info = a.reset(seed=100, options={"reset_mask": np.array([False, True, False])})
    assert info["_val_loss"].tolist() == [False, True, False]
    assert obs["student"][1, 0] == 0 and obs["student"][0, 0] > 0
    fresh = gym.make("L2T-v0", **kwargs)
    fresh_obs, _ = fresh.reset(seed=101)  # seed + index, as Gymnasium seeds sub-envs
    _close(obs["student"][1], fresh_obs["student"], "reset sub-env")
    out_a, out_b = a.step(actions), b.step(actions)
    for i in (0, 2):
        _close(out_a[0]["student"][i], out_b[0]["student"][i], f"untouched sub-env {i}", rtol=0, atol=0)
        assert out_a[1][i] == out_b[1][i]
    _close(out_a[0]["student"][1], fresh.step(actions[1])[0]["student"], "reset sub-env stepped")


def test_one_diverging_sub_env_terminates_alone():
    venv = make_vec(**{**DIGITS, "lookahead": "off", "teaching_steps": 4})
    venv.reset(seed=0)
    phi = venv.unwrapped.phi.clone()
    phi[1] *= 1e30  # a loss scale no student survives
    _, reward, terminated, truncated, info = venv.unwrapped.commit_phi(phi)
    assert terminated.tolist() == [False, True, False] and not truncated.any()
    assert reward[1] == -10.0 and info["diverged"].tolist() == [False, True, False]
    assert info["_final"].tolist() == [False, True, False] and np.isfinite(reward).all()
    obs, reward, terminated, _, info = venv.step(np.zeros(venv.action_space.shape, np.float32))
    assert obs["student"][1, 0] == 0 and obs["student"][0, 0] == 0.5  # 1 reset, the others went on
    assert reward[1] == 0 and not terminated.any()


def test_batched_hooks_match_the_loss_grad_observation():
    venv = make_vec(**{**DIGITS, "teaching_steps": 3})
    obs, _ = venv.reset(seed=1)
    core = venv.unwrapped
    phi = core.phi.clone().requires_grad_(True)
    val = core.unrolled_val_loss(phi)
    assert val.shape == (N,)
    (grad,) = torch.autograd.grad(val.sum(), phi)
    _close(grad.numpy(), obs["loss_grad"], "hook gradient vs observation", rtol=1e-5, atol=1e-7)
    _, _, _, _, info = venv.step(torch.full((N, core.n_phi), 0.5))
    assert not info["reused_unroll"].any()  # the observation's unroll was at the old phi
    u = torch.full((N, core.n_phi), 0.5)
    val = core.unrolled_val_loss(core.phi_after(u))
    _, _, _, _, info = venv.step(u)
    assert info["reused_unroll"].all()


def test_bad_input_is_refused_and_changes_nothing():
    with pytest.raises(ValueError, match="batching='gpu'"):
        make_vec(batching="gpu", **DIGITS)
    with pytest.raises(ValueError, match="num_envs=0"):
        make_vec(n=0, **DIGITS)
    venv = make_vec(**{**DIGITS, "lookahead": "off"})
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros(venv.action_space.shape, np.float32))
    obs, _ = venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(5000,\), expected \(3, 5000\)"):
        venv.step(np.zeros(5000, np.float32))
    bad = np.zeros(venv.action_space.shape, np.float32)
    bad[2, 7] = np.nan
    with pytest.raises(ValueError, match=r"sub-env\(s\) \[2\]"):
        venv.step(bad)
    with pytest.raises(ValueError, match="seed is a list of 2"):
        venv.reset(seed=[1, 2])
    np.testing.assert_array_equal(venv.unwrapped.phi.numpy(), obs["loss_params"])


def test_auto_batching_falls_back_to_the_loop_for_checkpointed_unrolls():
    venv = make_vec(n=2, checkpoint_unroll=True, **{**DIGITS, "teaching_steps": 2})
    assert venv.unwrapped.batching == "loop"
    with pytest.raises(ValueError, match="checkpoint_unroll"):
        make_vec(n=2, batching="vmap", checkpoint_unroll=True, **DIGITS)


@pytest.mark.gpu
def test_vector_env_on_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    kwargs = {**DIGITS, "teaching_steps": 5}
    outs = {}
    for device in ("cpu", "cuda"):
        venv = make_vec(**{**kwargs, "device": device})
        obs, _ = venv.reset(seed=0)
        for _ in range(5):
            obs, reward, *_ , info = venv.step(np.full(venv.action_space.shape, 0.1, np.float32))
        outs[device] = (obs["student"], info["final"]["test_loss"])
    _close(outs["cuda"][0], outs["cpu"][0], "student obs on cuda", rtol=1e-3, atol=1e-4)
    _close(outs["cuda"][1], outs["cpu"][1], "final test loss on cuda", rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("loss, action_mode", [("dlf", "full"), ("dfm", "set"), ("ce", "full")])
def test_other_loss_families_and_action_modes_follow_single_envs(loss, action_mode):
    kwargs = dict(DIGITS, loss=loss, action_mode=action_mode, teaching_steps=3, lookahead="off" if loss == "ce" else "K")
    venv = make_vec(n=2, **kwargs)
    assert venv.unwrapped.batching == "vmap"
    singles = [gym.make("L2T-v0", **kwargs) for _ in range(2)]
    venv.reset(seed=5)
    for i, env in enumerate(singles):
        env.reset(seed=5 + i)
    for t in range(3):
        if action_mode == "set":
            actions = venv.unwrapped.phi.numpy() * np.float32(0.9)
        else:
            actions = np.full(venv.action_space.shape, 0.5, np.float32)
        obs, reward, *_ = venv.step(actions)
        results = [env.step(actions[i]) for i, env in enumerate(singles)]
        _close(reward, [r[1] for r in results], f"{loss} step {t} rewards", atol=1e-5)
        for key in obs:
            _close(obs[key], np.stack([r[0][key] for r in results]), f"{loss} step {t} obs {key}")


def test_noisy_labels_follow_single_envs():
    kwargs = dict(DIGITS, lookahead="off", teaching_steps=2, dataset="digits-noisy", dataset_kwargs={"noise": 0.4})
    venv = make_vec(n=2, **kwargs)
    singles = [gym.make("L2T-v0", **kwargs) for _ in range(2)]
    venv.reset(seed=8)
    for i, env in enumerate(singles):
        env.reset(seed=8 + i)
    actions = np.full(venv.action_space.shape, 0.2, np.float32)
    for _ in range(2):
        obs, *_, info = venv.step(actions)
        results = [env.step(actions[i]) for i, env in enumerate(singles)]
    _close(obs["student"], np.stack([r[0]["student"] for r in results]), "noisy-label student obs")
    _close(info["final"]["train_loss"], [r[4]["final"]["train_loss"] for r in results], "noisy-label final train loss")


def test_flat_observations_match_the_single_env():
    kwargs = dict(DIGITS, teaching_steps=2, observation_mode="flat")
    venv, single = make_vec(n=2, **kwargs), gym.make("L2T-v0", **kwargs)
    obs, _ = venv.reset(seed=0)
    single_obs, _ = single.reset(seed=0)
    assert obs.shape == (2, *single_obs.shape) and venv.observation_space.contains(obs)
    _close(obs[0], single_obs, "flat observation")


def test_auto_batching_loops_convolutional_students_on_the_cpu():
    assert make_vec(n=2, **{**_tiny_resnet_kwargs(), "lookahead": "off"}).unwrapped.batching == "loop"
    assert make_vec(n=2, **{**DIGITS, "lookahead": "off"}).unwrapped.batching == "vmap"
