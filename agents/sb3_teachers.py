"""Standard RL agents as teachers: PPO, A2C, SAC and TD3 from Stable-Baselines3.

Unlike the L2T-DLN teacher, which learns online inside one episode, these agents are trained
first on episodes of *training* seeds (:meth:`SB3Teacher.train`) and then act frozen on
evaluation seeds: ``act(obs)`` is the deterministic ``model.predict`` on the observation as the
agent saw it in training. Keeping training and evaluation seeds disjoint is the caller's job
(``l2t bench`` checks it).

Why a low-dimensional env: the env's default action moves each of the DLN's 5,000 parameters
separately; a 5,000-dimensional Gaussian policy or Q-function swamps these agents on any budget a
CPU allows. They therefore run with ``action_mode="layer"``: one scale per DLN layer (5 for the
DLN), applied by the env to the normalised hypergradient of that layer, so ``a_l = 1`` is a
normalised hypergradient step and the agent learns *how far* to step each layer, when.

``action_mode: control`` (``configs/agents/*-control.yaml``) gives them an even smaller target, in
the spirit of Adaptive Loss Alignment (Huang et al., ICML 2019): each teaching step the agent sets
a robust loss's hyper-parameters (GCE's ``q``, SCE's ``alpha`` and ``beta``, ...) or the fused
metric's weights (``loss="dfm"``) within bounded ranges, with no look-ahead (the env's
``action_mode="control"``; the loss family is an env argument). Its observation is then ``full``:
the student state and phi, a dozen numbers.

For the same reason the default ``observation: summary`` gives the agent the student state (8
numbers) and, per DLN layer, ``log10 rms(loss_grad)``, ``rms(phi)`` and ``mean(phi)``, instead of
the raw 10,008-number Dict (``observation: full`` keeps that, for comparison). Every Dict key is
normalised with SB3's ``VecNormalize``; its statistics are saved with the agent and frozen
(``training=False``, ``norm_reward=False``) when acting.

Hyper-parameters come from RL-Zoo-style YAML files, ``configs/agents/{ppo,a2c,sac,td3}.yaml``
(or any file passed as ``config=``; read by :mod:`l2t_agents.sb3_config`); keyword arguments
override single keys. The observation wrappers and the seed schedule are in
:mod:`l2t_agents.sb3_wrappers`.
``n_envs`` students train side by side: as single envs in SB3's ``DummyVecEnv`` (default) or, with
``vector_env: true``, as one batched ``L2TVectorEnv`` behind :class:`l2t_agents.sb3_vec.SB3VecEnv`.
Frozen, a teacher acts on one env or on a native vector env (``batched = True``): a batch of
observations, summarised sub-env by sub-env, goes through one deterministic ``model.predict`` and
gives ``[N, n_act]`` actions, row by row those of each observation alone (to float32 rounding: the
policy's matmuls on N rows and on one may round differently). So ``l2t bench`` evaluates a trained
agent's seeds as one vector env (``batch_seeds``).

:meth:`SB3Teacher.train` takes SB3 callbacks (``l2t train``'s learning curve on held-out seeds)
and resumes from a training snapshot (:meth:`SB3Teacher.save_training`).

A saved agent is a folder, or one ``.zip`` of the same files (:meth:`SB3Teacher.save`): ``model.zip`` (SB3's own format, loadable
with ``PPO.load`` etc.), ``vecnormalize.pkl`` (SB3's ``VecNormalize.save`` format; absent with
``normalize: false``) and ``teacher.json`` (hyper-parameters, observation mode, how and on what
it was trained). Both SB3 files are pickles: load only agents you trust.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
import zipfile
from functools import partial
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Sequence, Union

import gymnasium as gym
import numpy as np
import stable_baselines3
from stable_baselines3 import A2C, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HumanOutputFormat, Logger
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor, VecNormalize

from l2t_agents.base import BaseTeacher, is_vector_env, register_teacher
from l2t_agents.evaluation import _teacher_env_kwargs, make_env
from l2t_agents.sb3_config import AGENT_ACTION_MODES, ENV_ID, NOISES, OBSERVATIONS, ZOO_KEYS, learning_rate, load_agent_config, normalize_kwargs, parse_policy_kwargs
from l2t_agents.sb3_vec import SB3VecEnv, map_rows
from l2t_agents.sb3_wrappers import LayerSummary, SeedSchedule, env_groups, layer_summary, summary_space_of

_NOT_FROM_CONFIG = ("self", "policy", "env", "tensorboard_log", "_init_setup_model", "action_noise", "seed")


# ---------------------------------------------------------------------------------- the teachers
class _Progress(BaseCallback):
    """Reports ``(timesteps done, total)`` to a callable (a progress bar)."""

    def __init__(self, report: Callable[[int, int], Any], total: int) -> None:
        super().__init__()
        self.report, self.total = report, total

    def _on_step(self) -> bool:
        self.report(self.num_timesteps, self.total)
        return True


class SB3Teacher(BaseTeacher):
    """A Stable-Baselines3 agent trained on training seeds, then acting frozen.

    Args:
        config: an agent YAML (built-in name or path); default: the one named as the teacher.
        seed: the agent's own seed (network initialisation, exploration, minibatches).
        **hyperparams: overrides of single YAML keys, e.g. ``n_steps=32`` or ``n_timesteps=500``.

    ``learning`` is always False for ``run_episode``: the agent learns only in :meth:`train`.
    Frozen, it acts on one env or on a native vector env alike (``batched``): a batch of
    observations is one ``model.predict`` call.
    """

    algo: ClassVar[type[BaseAlgorithm]]
    batched: ClassVar[bool] = True
    #: what the env must be, per ``action_mode`` hyper-parameter (the loss family is the caller's:
    #: ``loss="gce"`` etc. in ``control`` mode)
    ENV_KWARGS: ClassVar[dict] = {
        "layer": {"action_mode": "layer", "lookahead": "K", "observation_mode": "dict"},
        "control": {"action_mode": "control", "lookahead": "off", "observation_mode": "dict"},
    }

    def __init__(self, config: Union[str, Path, None] = None, seed: int = 0, **hyperparams: Any) -> None:
        super().__init__()
        self.learning = False
        self.seed = int(seed)
        self.hyperparams = {**load_agent_config(config or self.name), **hyperparams}
        self._check_hyperparams(self.hyperparams)
        self.model: Optional[BaseAlgorithm] = None
        self.vecnorm: Optional[VecNormalize] = None
        self.meta: dict = {}

    @property
    def action_mode(self) -> str:
        return self.hyperparams.get("action_mode", "layer")

    @property
    def env_kwargs(self) -> dict:  # type: ignore[override]
        return dict(self.ENV_KWARGS[self.action_mode])

    # ------------------------------------------------------------------ configuration
    def _constructor_keys(self) -> list[str]:
        params = inspect.signature(self.algo.__init__).parameters
        return [k for k in params if k not in _NOT_FROM_CONFIG]

    def _check_hyperparams(self, hp: dict) -> None:
        valid = sorted(set(ZOO_KEYS) | set(self._constructor_keys()))
        unknown = sorted(set(hp) - set(valid))
        if unknown:
            raise ValueError(f"{self.name}: unknown hyper-parameter(s) {unknown}; valid: {valid}")
        if hp.get("action_mode", "layer") not in AGENT_ACTION_MODES:
            raise ValueError(f"{self.name}: action_mode={hp['action_mode']!r}; valid: {list(AGENT_ACTION_MODES)}")
        if hp.get("observation", "summary") not in OBSERVATIONS:
            raise ValueError(f"{self.name}: observation={hp['observation']!r}; valid: {list(OBSERVATIONS)}")
        if hp.get("action_mode") == "control" and hp.get("observation") == "summary":
            raise ValueError(f"{self.name}: observation='summary' summarises the look-ahead's loss_grad, which "
                             "action_mode='control' runs without; use observation='full' (student state and phi)")
        if not isinstance(hp.get("vector_env", False), bool):
            raise ValueError(f"{self.name}: vector_env={hp['vector_env']!r}; expected true or false")
        if hp.get("noise_type") is not None and hp["noise_type"] not in NOISES:
            raise ValueError(f"{self.name}: noise_type={hp['noise_type']!r}; valid: {sorted(NOISES)}")
        normalize_kwargs(hp.get("normalize", False), self.name)
        parse_policy_kwargs(hp.get("policy_kwargs"))

    @property
    def observation(self) -> str:
        """``summary`` (default with ``layer``) or ``full`` (default with ``control``: the student state and phi)."""
        return self.hyperparams.get("observation", "full" if self.action_mode == "control" else "summary")

    @property
    def n_timesteps(self) -> int:
        return int(self.hyperparams.get("n_timesteps", 10_000))

    # ------------------------------------------------------------------ training
    def _train_env(self, task: Any, seeds: Sequence[int], index: int, n_envs: int, env_kwargs: dict) -> gym.Env:
        env = make_env(self, task, **env_kwargs)
        env = SeedSchedule(env, seeds, start=index, stride=n_envs)
        if self.observation == "summary":
            env = LayerSummary(env)
        return Monitor(env)

    def _train_vector_env(self, task: Any, seeds: Sequence[int], n_envs: int, env_kwargs: dict) -> tuple[VecEnv, list]:
        """``vector_env: true``: the ``n_envs`` students as one ``L2TVectorEnv`` behind :class:`SB3VecEnv`,
        seeded and observed as :meth:`_train_env`'s ``DummyVecEnv`` sub-envs are."""
        kwargs = _teacher_env_kwargs(self, env_kwargs)
        venv = gym.make_vec(ENV_ID, num_envs=n_envs, vectorization_mode="vector_entry_point", task=task, **kwargs)
        groups = env_groups(venv)
        if self.observation == "summary":
            space = summary_space_of(venv.single_observation_space, groups)
            return VecMonitor(SB3VecEnv(venv, seeds, partial(layer_summary, groups=groups), space)), groups
        return VecMonitor(SB3VecEnv(venv, seeds)), groups

    def train(
        self,
        task: Any = "digits-mlp",
        seeds: Sequence[int] = (0,),
        total_timesteps: Optional[int] = None,
        env_kwargs: Optional[dict] = None,
        tensorboard_log: Optional[str] = None,
        progress: Optional[Callable[[int, int], Any]] = None,
        callback: Any = None,
        resume: Union[str, Path, None] = None,
    ) -> "SB3Teacher":
        """Train a new agent on episodes of ``task`` reset with ``seeds`` in turn.

        ``total_timesteps`` defaults to the YAML's ``n_timesteps``; ``env_kwargs`` go to every env
        (task overrides such as ``teaching_steps`` and ``device`` included). TensorBoard logs are
        written under ``tensorboard_log`` only when it is given; without it nothing is written
        (SB3's default logger would leave an empty ``SB3-<date>`` folder in the temp dir each
        time). ``progress(done, total)`` is called after each env step. ``callback``: SB3
        callbacks run during learning (``l2t train``'s evaluations); while they run, the teacher
        acts with the current policy (:meth:`act`) and :meth:`save_training` snapshots the training.

        ``resume``: a folder written by :meth:`save_training` of the same task, seeds and settings;
        training continues from its policy, optimiser, normalisation statistics (and replay buffer)
        and seed schedule up to ``total_timesteps`` in all. The episodes in flight when it was
        written restart, so a resumed training is not bit-identical to an uninterrupted one.
        """
        hp = dict(self.hyperparams)
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError(f"{self.name}: train() needs at least one training seed")
        total = int(total_timesteps if total_timesteps is not None else self.n_timesteps)
        if total < 1:
            raise ValueError(f"{self.name}: total_timesteps={total}, expected >= 1")
        env_kwargs = dict(env_kwargs or {})
        n_envs = int(hp.pop("n_envs", 1))
        if hp.pop("vector_env", False):
            venv, groups = self._train_vector_env(task, seeds, n_envs, env_kwargs)
        else:
            venv = DummyVecEnv([partial(self._train_env, task, seeds, i, n_envs, env_kwargs) for i in range(n_envs)])
            groups = env_groups(venv.envs[0])
        algo_kwargs = {k: v for k, v in hp.items() if k not in ZOO_KEYS}
        norm = normalize_kwargs(hp.get("normalize", False), self.name)
        resume = Path(resume) if resume is not None else None
        state = self._read_training_state(resume, task, seeds) if resume is not None else None
        if norm is not None:
            if resume is not None:
                venv = VecNormalize.load(str(resume / "vecnormalize.pkl"), venv)
            else:
                norm = {"gamma": algo_kwargs.get("gamma", 0.99), "norm_obs_keys": list(venv.observation_space.spaces), **norm}
                venv = VecNormalize(venv, **norm)
        if "learning_rate" in algo_kwargs:
            algo_kwargs["learning_rate"] = learning_rate(algo_kwargs["learning_rate"])
        if hp.get("noise_type"):
            n_act = venv.action_space.shape[0]
            algo_kwargs["action_noise"] = NOISES[hp["noise_type"]](np.zeros(n_act), float(hp.get("noise_std", 0.1)) * np.ones(n_act))
        algo_kwargs.setdefault("device", "cpu")  # small MLPs: a GPU only adds transfers
        algo_kwargs.setdefault("verbose", 0)
        if resume is not None:
            model = self.algo.load(resume / "model.zip", env=venv, device=algo_kwargs["device"], tensorboard_log=tensorboard_log)
            if (resume / "replay_buffer.pkl").is_file():
                model.load_replay_buffer(resume / "replay_buffer.pkl")
            _set_seed_positions(venv, state["seed_positions"])
        else:
            model = self.algo(
                hp.get("policy", "MultiInputPolicy"),
                venv,
                policy_kwargs=parse_policy_kwargs(hp.get("policy_kwargs")),
                tensorboard_log=tensorboard_log,
                seed=self.seed,
                **algo_kwargs,
            )
        if tensorboard_log is None:  # SB3's default logger makes an (empty) SB3-<date> folder in the temp dir
            model.set_logger(Logger(folder=None, output_formats=[HumanOutputFormat(sys.stdout)] if model.verbose >= 1 else []))
        self.meta = {
            "task": task if isinstance(task, str) else getattr(task, "name", str(task)),
            "train_seeds": seeds,
            "total_timesteps": total,
            "timesteps_done": int(model.num_timesteps),
            "env_kwargs": env_kwargs,
            "groups": groups,
            "train_time": float(state["train_time"]) if state else 0.0,
            "sb3_version": stable_baselines3.__version__,
        }
        self.model, self._training_env = model, venv
        self.vecnorm = self._frozen(venv) if norm is not None else None
        callbacks = [] if callback is None else list(callback) if isinstance(callback, (list, tuple)) else [callback]
        if progress:
            callbacks.insert(0, _Progress(progress, total))
        start = time.perf_counter()
        train_time0 = self.meta["train_time"]
        self._train_start = (start, train_time0)
        remaining = total - int(model.num_timesteps)
        try:
            if remaining > 0:
                model.learn(remaining, callback=callbacks or None, tb_log_name=self.name, reset_num_timesteps=resume is None)
            self.meta.update(timesteps_done=int(model.num_timesteps), train_time=train_time0 + time.perf_counter() - start)
            self.vecnorm = self._frozen(venv) if norm is not None else None
        finally:
            self._training_env = None
            venv.close()
        self.learning = False
        return self

    # ------------------------------------------------------------------ during training
    def refresh(self) -> None:
        """Act with the policy as it is now (during :meth:`train`, from a callback): take the current
        normalisation statistics, frozen, and the time and steps trained so far."""
        venv = getattr(self, "_training_env", None)
        if venv is None or self.model is None:
            raise RuntimeError(f"{self.name}: refresh() is for callbacks while train() runs")
        if isinstance(venv, VecNormalize):
            self.vecnorm = self._frozen(venv)
        start, before = self._train_start
        self.meta.update(timesteps_done=int(self.model.num_timesteps), train_time=before + time.perf_counter() - start)

    def save_training(self, path: Union[str, Path]) -> None:
        """Snapshot a training in progress (from a callback) as a folder that ``train(resume=...)``
        continues: the SB3 model with its optimiser, the live ``VecNormalize``, an off-policy
        agent's replay buffer, the seed schedule's position. Written beside ``path``, renamed into place."""
        venv = getattr(self, "_training_env", None)
        if venv is None or self.model is None:
            raise RuntimeError(f"{self.name}: save_training() is for callbacks while train() runs")
        self.refresh()

        def write(tmp: Path) -> None:
            self.model.save(tmp / "model.zip")
            if isinstance(venv, VecNormalize):
                venv.save(str(tmp / "vecnormalize.pkl"))
            if hasattr(self.model, "replay_buffer") and self.model.replay_buffer is not None:
                self.model.save_replay_buffer(tmp / "replay_buffer.pkl")
            state = {**self._info(), "seed_positions": _seed_positions(venv)}
            (tmp / "training.json").write_text(json.dumps(state, indent=1))

        _write_folder(Path(path), write)

    def _read_training_state(self, path: Path, task: Any, seeds: list[int]) -> dict:
        """``training.json`` of a :meth:`save_training` folder, checked against this training."""
        file = path / "training.json"
        if not file.is_file():
            raise FileNotFoundError(f"{path} is not a training snapshot (no training.json; expected a folder written by save_training())")
        state = json.loads(file.read_text())
        self.check_saved_by_me(state.get("teacher"), path)
        meta = state["meta"]
        name = task if isinstance(task, str) else getattr(task, "name", str(task))
        mismatch = {k: (meta[k], v) for k, v in (("task", name), ("train_seeds", seeds)) if meta.get(k) != v}
        if state["hyperparams"] != self.hyperparams:
            mismatch["hyperparams"] = (state["hyperparams"], self.hyperparams)
        if mismatch:
            raise ValueError(f"{path} was written by another training; differences (saved, now): {mismatch}")
        return {"seed_positions": state["seed_positions"], "train_time": meta.get("train_time", 0.0)}

    @staticmethod
    def _frozen(vecnorm: VecNormalize) -> VecNormalize:
        """The normalisation statistics, detached from any env, no longer updating.

        Unpickling leaves out what ``VecNormalize`` rebuilds in ``set_venv``; the two attributes
        its ``__getstate__`` drops are put back so that the frozen copy can be saved again.
        """
        frozen = pickle.loads(pickle.dumps(vecnorm)) if vecnorm.venv is not None else vecnorm
        frozen.class_attributes = {}
        frozen.returns = np.zeros(1)
        frozen.training = False
        frozen.norm_reward = False
        return frozen

    # ------------------------------------------------------------------ acting
    def reset(self, env: gym.Env) -> None:
        super().reset(env)
        if self.model is None:
            return
        groups = env_groups(env)
        if self.meta.get("groups") and groups != self.meta["groups"]:
            raise ValueError(f"{self.name}: the env's loss-parameter groups {groups} differ from training's {self.meta['groups']}")
        space = env.single_action_space if is_vector_env(env) else env.action_space
        if space.shape != self.model.action_space.shape:
            raise ValueError(
                f"{self.name}: env action space {space} differs from the agent's {self.model.action_space}; "
                f"make the env with {self.env_kwargs}"
            )

    def _is_batch(self, obs: Any) -> bool:
        """Whether ``obs`` is a vector env's batched Dict (``student`` ``[N, 8]``) rather than one env's."""
        if not isinstance(obs, dict) or "student" not in obs:
            raise ValueError(f"{self.name}: expected L2T-v0's Dict observation (observation_mode='dict'), got {type(obs).__name__}")
        ndim = np.ndim(obs["student"])
        if ndim not in (1, 2):
            raise ValueError(f"{self.name}: observation 'student' has {ndim} dimensions; expected 1 (one env) or 2 (a vector env's batch)")
        return ndim == 2

    def policy_observation(self, obs: Any) -> dict:
        """The env's observation as the agent sees it: summarised (per ``observation``, sub-env by
        sub-env for a batch), batched (one env: a batch of one), normalised."""
        batched = self._is_batch(obs)
        if self.observation == "summary":
            summarise = partial(layer_summary, groups=self.meta["groups"])
            obs = map_rows(summarise, obs) if batched else summarise(obs)
        batch = {k: np.asarray(v, dtype=np.float32) if batched else np.asarray(v, dtype=np.float32)[None] for k, v in obs.items()}
        return self.vecnorm.normalize_obs(batch) if self.vecnorm is not None else batch

    def act(self, obs: Any) -> np.ndarray:
        """The deterministic action: ``[n_act]`` for one env's observation, ``[N, n_act]`` for a batch."""
        if self.model is None:
            raise RuntimeError(f"the {self.name} teacher has no policy yet: call train() or load() first")
        action, _ = self.model.predict(self.policy_observation(obs), deterministic=True)
        space = self.model.action_space
        action = np.clip(np.asarray(action, dtype=np.float32), space.low, space.high)
        return action if self._is_batch(obs) else action[0]

    # ------------------------------------------------------------------ state
    def _info(self) -> dict:
        return {"teacher": self.name, "seed": self.seed, "hyperparams": self.hyperparams, "meta": self.meta}

    def state_dict(self) -> dict:
        """The teacher's settings plus the SB3 zip and the pickled ``VecNormalize``, as bytes."""
        if self.model is None:
            raise RuntimeError(f"the {self.name} teacher has nothing to save: call train() first")
        buf = io.BytesIO()
        self.model.save(buf)
        return {**self._info(), "model_zip": buf.getvalue(), "vecnormalize": pickle.dumps(self.vecnorm) if self.vecnorm else None}

    def load_state_dict(self, state: dict) -> None:
        self.check_saved_by_me(state.get("teacher"), "this state")
        self._restore(state, io.BytesIO(state["model_zip"]), pickle.loads(state["vecnormalize"]) if state["vecnormalize"] else None)

    def _restore(self, info: dict, model_file: Any, vecnorm: Optional[VecNormalize]) -> None:
        self.seed = int(info["seed"])
        self.hyperparams = dict(info["hyperparams"])  # what the saved agent was trained with
        self.meta = dict(info["meta"])
        self.model = self.algo.load(model_file, device=self.hyperparams.get("device", "cpu"))
        self.vecnorm = self._frozen(vecnorm) if vecnorm is not None else None
        self.learning = False

    def _write_files(self, tmp: Path) -> None:
        self.model.save(tmp / "model.zip")
        if self.vecnorm is not None:
            self.vecnorm.save(str(tmp / "vecnormalize.pkl"))
        (tmp / "teacher.json").write_text(json.dumps(self._info(), indent=1))

    def save(self, path: Union[str, Path]) -> None:
        """Write the agent: ``model.zip``, ``vecnormalize.pkl`` and ``teacher.json`` in a folder, or,
        for a ``path`` ending in ``.zip``, in one zip archive of those three files (one file to ship).

        Written beside ``path`` and renamed into place, so that an interrupted save never leaves a
        half-written agent that a later run would load.
        """
        if self.model is None:
            raise RuntimeError(f"the {self.name} teacher has nothing to save: call train() first")
        path = Path(path)
        if path.suffix != ".zip":
            _write_folder(path, self._write_files)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
            self._write_files(Path(tmp))
            archive = Path(tmp) / ".archive.zip"  # not a member's name, whatever path is called
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
                for name in ("model.zip", "vecnormalize.pkl", "teacher.json"):
                    if (Path(tmp) / name).is_file():
                        zf.write(Path(tmp) / name, name)
            os.replace(archive, path)

    @staticmethod
    def read_info(path: Union[str, Path]) -> dict:
        """``teacher.json`` of a saved agent (folder or ``.zip``): its name, hyper-parameters and ``meta``
        (task, training seeds, budget), without loading the model."""
        path = Path(path)
        if path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                if "teacher.json" in zf.namelist():
                    return json.loads(zf.read("teacher.json"))
        elif (path / "teacher.json").is_file():
            return json.loads((path / "teacher.json").read_text())
        raise FileNotFoundError(f"{path} is not a saved SB3 agent (expected a folder or .zip written by save(), holding teacher.json)")

    def load(self, path: Union[str, Path]) -> None:
        """Load an agent written by :meth:`save` (a folder or a ``.zip``); the agent then acts frozen."""
        path = Path(path)
        if path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
                if "teacher.json" not in names or "model.zip" not in names:
                    raise FileNotFoundError(f"{path} is not a saved {self.name} agent (expected teacher.json and model.zip inside, got {sorted(names)})")
                info = json.loads(zf.read("teacher.json"))
                self.check_saved_by_me(info.get("teacher"), path)
                vecnorm = pickle.loads(zf.read("vecnormalize.pkl")) if "vecnormalize.pkl" in names else None
                self._restore(info, io.BytesIO(zf.read("model.zip")), vecnorm)
            return
        info_file = path / "teacher.json"
        if not info_file.is_file():
            raise FileNotFoundError(f"{path} is not a saved {self.name} agent (no teacher.json; expected a folder or .zip written by save())")
        info = json.loads(info_file.read_text())
        self.check_saved_by_me(info.get("teacher"), path)
        norm_file = path / "vecnormalize.pkl"
        vecnorm = None
        if norm_file.is_file():
            # VecNormalize.load without set_venv: acting needs only the statistics, not an env.
            with norm_file.open("rb") as fh:
                vecnorm = pickle.load(fh)
        self._restore(info, path / "model.zip", vecnorm)


def _write_folder(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` into a fresh folder beside ``path``, then rename it into place (replacing ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)


def _schedules(venv: Any) -> list[Any]:
    """The seed schedules of a training env: the ``SB3VecEnv`` or each sub-env's ``SeedSchedule``."""
    while hasattr(venv, "venv") and not isinstance(venv, SB3VecEnv):
        venv = venv.venv
    if isinstance(venv, SB3VecEnv):
        return [venv]
    found = []
    for env in venv.envs:
        while not isinstance(env, SeedSchedule):
            env = env.env
        found.append(env)
    return found


def _seed_positions(venv: Any) -> list:
    return [np.asarray(s._next).tolist() for s in _schedules(venv)]


def _set_seed_positions(venv: Any, positions: list) -> None:
    schedules = _schedules(venv)
    if len(positions) != len(schedules):
        raise ValueError(f"the snapshot has {len(positions)} seed schedules, this training {len(schedules)}: n_envs or vector_env differ")
    for s, pos in zip(schedules, positions):
        s._next = np.asarray(pos) if isinstance(s, SB3VecEnv) else int(pos)


@register_teacher("ppo")
class PPOTeacher(SB3Teacher):
    """PPO (on-policy, clipped surrogate), on the per-layer or the control action."""

    algo = PPO


@register_teacher("a2c")
class A2CTeacher(SB3Teacher):
    """A2C (on-policy, synchronous advantage actor-critic), on the per-layer or the control action."""

    algo = A2C


@register_teacher("sac")
class SACTeacher(SB3Teacher):
    """SAC (off-policy, maximum-entropy, squashed Gaussian), on the per-layer or the control action."""

    algo = SAC


@register_teacher("td3")
class TD3Teacher(SB3Teacher):
    """TD3 (off-policy, deterministic, twin critics), on the per-layer or the control action."""

    algo = TD3
