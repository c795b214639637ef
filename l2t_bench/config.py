"""Benchmark configs: the YAML of ``l2t bench`` read, checked and expanded into runs.

A run's key is (task label, teacher label, seed, hash of everything else that shapes it): the
resume rule of ``runs.jsonl`` and the identity of trained agents both rest on it. Where a run
executes (``resources``, ``max_retries``, ``workers``) and which modules register its teachers (``imports``) do
not shape its result and stay out of the key.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import numbers
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from l2t_env.config_files import builtin_names, config_dir, read_yaml

BENCH_KEYS = (
    "name", "description", "tasks", "teachers", "seeds", "train_seeds", "train_timesteps",
    "task_overrides", "env_kwargs", "device", "reference", "checkpoint_every", "resources", "max_retries", "imports",
    "batch_seeds", "workers", "eval_every", "train_eval",
)
TASK_ENTRY_KEYS = ("name", "label", "overrides", "resources")
TEACHER_ENTRY_KEYS = ("name", "label", "kwargs", "env_kwargs", "pretrain", "resources", "grid", "load")
#: monitored steps per episode when a bench sets no ``eval_every``: every teaching_steps // 20 steps
DEFAULT_EVALUATIONS = 20
PRETRAIN_KEYS = ("seeds", "episodes", "tasks", "online")
#: what a run may ask of a Ray worker (``resources:`` of the bench, a task or a teacher entry)
RESOURCE_KEYS = ("num_cpus", "num_gpus")
DEFAULT_MAX_RETRIES = 3


@dataclass
class TaskSpec:
    """One task of a benchmark: a built-in name or YAML path, with overrides, under a unique label."""

    label: str
    name: str
    overrides: dict = field(default_factory=dict)
    #: Ray resources of each run of this task (``num_cpus``, ``num_gpus``)
    resources: dict = field(default_factory=dict)


@dataclass
class TeacherSpec:
    """One teacher of a benchmark: a registry name and constructor kwargs, under a unique label."""

    label: str
    name: str
    kwargs: dict = field(default_factory=dict)
    #: env arguments of this teacher's envs, over the bench's ``env_kwargs`` (e.g. a DLN init)
    env_kwargs: dict = field(default_factory=dict)
    #: has ``train``: trained on ``train_seeds`` before evaluation, then acts frozen
    trainable: bool = False
    #: what fixes a trained agent besides the kwargs (the resolved hyper-parameters), for the run key
    hyperparams: Optional[dict] = None
    default_timesteps: Optional[int] = None
    #: ``pretrain:`` of the entry, checked: meta-trained on these seeds/tasks before evaluation
    pretrain: Optional["PretrainSpec"] = None
    #: Ray resources of each run of this teacher; over the task's
    resources: dict = field(default_factory=dict)
    #: acts on a native vector env and is not pretrained (fresh, or a trained agent acting frozen)
    batched: bool = False
    #: a simple method without a teacher (its class's ``baseline``): Δ columns compare with the best one
    baseline: bool = False
    #: the label of the ``grid:`` entry this point belongs to (None: not a grid point)
    grid_of: Optional[str] = None
    #: this grid point's values, e.g. ``{"q": 0.5}``
    grid_point: Optional[dict] = None
    #: ``load:`` of the entry: a trained agent's file or folder, acting frozen instead of training here
    agent_file: Optional[str] = None
    #: sha256 of that agent's bytes (part of the run key: another agent is another run)
    agent_sha256: Optional[str] = None


@dataclass
class PretrainSpec:
    """A teacher entry's ``pretrain: {seeds, episodes, tasks, online}``.

    ``tasks`` are bench task labels or task names (default: the task being evaluated, so each task
    gets its own pretrained teacher); ``online`` keeps it learning on each evaluation seed (default
    frozen). Rows that differ only in ``online`` or ``label`` share one pretrained teacher.
    """

    seeds: list[int]
    episodes: Optional[int] = None
    tasks: Optional[list[str]] = None
    online: bool = False


@dataclass
class BenchConfig:
    """A validated benchmark config (see the module docstring for the YAML)."""

    name: str
    tasks: list[TaskSpec]
    teachers: list[TeacherSpec]
    seeds: list[int]
    train_seeds: list[int] = field(default_factory=list)
    train_timesteps: Union[int, dict, None] = None
    env_kwargs: dict = field(default_factory=dict)
    device: str = "auto"
    #: what the Δ columns compare with: "best" (the task's best baseline) or a teacher label
    reference: str = "best"
    #: Ray resources of every run, under the task's and the teacher's
    resources: dict = field(default_factory=dict)
    #: how often a run whose worker process died is started again (Ray backend)
    max_retries: int = DEFAULT_MAX_RETRIES
    #: local backend: run this many tasks at once in worker processes (1: one after another in this process)
    workers: int = 1
    #: modules imported before the teachers are made, in the driver and in every worker
    imports: list[str] = field(default_factory=list)
    #: write a mid-episode checkpoint every N teaching steps (None: none); not part of a run's key
    checkpoint_every: Optional[int] = None
    #: run the seeds of a (task, teacher) whose teacher acts on batches as one vector env; part of
    #: those runs' keys (not of a trained agent's), as batched and one-by-one results differ in the last bits
    batch_seeds: bool = True
    raw: dict = field(default_factory=dict)
    #: record early stopping every N teaching steps (the env's ``monitor_every``); None: every
    #: ``teaching_steps // 20`` of each task; part of the run key
    eval_every: Optional[int] = None
    #: ``train_eval: {every: N, seeds: [...]}``: while an SB3 agent trains, evaluate it every N env
    #: steps on these held-out seeds (its learning curve); not part of any key
    train_eval: Optional[dict] = None
    #: run only these task / teacher labels (``l2t bench --tasks/--teachers``); None = all
    only_tasks: Optional[list[str]] = None
    only_teachers: Optional[list[str]] = None

    def select(self, tasks: Optional[Sequence[str]] = None, teachers: Optional[Sequence[str]] = None) -> None:
        """Plan only these task and teacher labels (a subset of a big config, same run keys)."""
        for chosen, specs, what in ((tasks, self.tasks, "task"), (teachers, self.teachers, "teacher")):
            unknown = sorted(set(chosen or ()) - {s.label for s in specs})
            if unknown:
                raise ValueError(f"no {what} labelled {unknown} in bench {self.name!r}; valid: {[s.label for s in specs]}")
        self.only_tasks = list(tasks) if tasks else None
        self.only_teachers = list(teachers) if teachers else None

    def batches(self, teacher: TeacherSpec) -> bool:
        """Whether this teacher's seeds run as one batched vector-env run."""
        return self.batch_seeds and teacher.batched

    def monitor_every(self, task: TaskSpec) -> int:
        """The ``eval_every`` of this task's runs: the config's, else ``teaching_steps // 20`` (at least 1)."""
        if self.eval_every is not None:
            return self.eval_every
        from l2t_env.tasks import load_task

        return max(1, load_task(task.name, **task.overrides).teaching_steps // DEFAULT_EVALUATIONS)

    def env_kwargs_for(self, teacher: TeacherSpec) -> dict:
        """The env arguments of this teacher's runs: the bench's, then the teacher entry's."""
        return {**self.env_kwargs, **teacher.env_kwargs}

    def timesteps(self, teacher: TeacherSpec) -> Optional[int]:
        """The training budget of a trainable teacher: the bench's, else the agent config's."""
        if isinstance(self.train_timesteps, dict):
            return self.train_timesteps.get(teacher.label, teacher.default_timesteps)
        return self.train_timesteps if self.train_timesteps is not None else teacher.default_timesteps

    def run_resources(self, run: "RunSpec") -> dict:
        """What one run asks of a worker: one CPU unless the bench, the task or the teacher says more."""
        return {"num_cpus": 1, **self.resources, **run.task.resources, **run.teacher.resources}


@dataclass
class RunSpec:
    """One (task, teacher, seed) of the plan, with the key that identifies it in ``runs.jsonl``."""

    task: TaskSpec
    teacher: TeacherSpec
    seed: int
    config_hash: str
    #: identifies the trained agent the run starts from (its folder name); default ``config_hash``
    agent_hash: Optional[str] = None

    @property
    def key(self) -> str:
        return f"{self.task.label}|{self.teacher.label}|{self.seed}|{self.config_hash}"


def resolve_config_path(config: Union[str, Path]) -> Path:
    """A file path, or the name of a built-in config under ``configs/bench/``."""
    path = Path(config)
    if path.is_file():
        return path
    builtin = config_dir("bench") / f"{config}.yaml"
    if not path.suffix and builtin.is_file():
        return builtin
    raise FileNotFoundError(f"bench config {str(config)!r} is neither a file nor a built-in; built-ins: {builtin_names('bench')}")


def _repeated(values: Iterable[Any]) -> list:
    """The values that occur more than once, sorted."""
    return sorted(value for value, count in Counter(values).items() if count > 1)


def _seed_list(value: Any, key: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        raise ValueError(f"{key}={value!r}: expected a list of integers >= 0")
    dupes = _repeated(value)
    if dupes:
        raise ValueError(f"{key} repeats seed(s) {dupes}")
    return list(value)


def _agent_file(value: Any, probe: Any, name: str) -> tuple[str, str]:
    """A ``load:`` path, checked, and its sha256: as given (relative to the working directory), else
    among the agents shipped with the package (``trained/...``: ``agents/trained/`` in a clone)."""
    if not callable(getattr(probe, "read_info", None)):
        raise ValueError(f"teacher {name!r}: load={value!r}, but this teacher does not load saved agents (the SB3 teachers do)")
    path = Path(str(value)).expanduser()
    tried = [path]
    if not path.is_absolute() and not path.exists():
        import l2t_agents

        path = Path(l2t_agents.__file__).resolve().parent / path
        tried.append(path)
    if not path.exists():
        raise FileNotFoundError(f"teacher {name!r}: load={value!r} not found (looked at {[str(p) for p in tried]})")
    info = probe_info(path)
    if info.get("teacher") != name:
        raise ValueError(f"teacher {name!r}: {path} holds a {info.get('teacher')!r} agent")
    digest = hashlib.sha256()
    for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.read_bytes())
    return str(path.resolve()), digest.hexdigest()


def probe_info(path: Union[str, Path]) -> dict:
    """A saved SB3 agent's ``teacher.json`` (see ``SB3Teacher.read_info``)."""
    from l2t_agents.sb3_teachers import SB3Teacher

    return SB3Teacher.read_info(path)


def _mapping(value: Any, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{key}={value!r}: expected a mapping")
    return dict(value)


def _resources(value: Any, what: str) -> dict:
    res = _mapping(value, f"{what}resources")
    unknown = sorted(set(res) - set(RESOURCE_KEYS))
    if unknown:
        raise ValueError(f"{what}resources: unknown key(s) {unknown}; valid: {list(RESOURCE_KEYS)}")
    for key, amount in res.items():
        if isinstance(amount, bool) or not isinstance(amount, numbers.Real) or not amount >= 0:
            raise ValueError(f"{what}resources: {key}={amount!r}, expected a number >= 0 (fractions allowed, e.g. num_gpus: 0.25)")
    return {k: float(v) if isinstance(v, float) else int(v) for k, v in res.items()}


def import_modules(names: Iterable[str]) -> None:
    """Import the ``imports:`` of a config (modules that register user teachers or tasks)."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ValueError(f"imports: cannot import module {name!r} ({err}); it must be importable in the driver and on every worker") from err


def _entry(entry: Any, valid: Sequence[str], what: str) -> dict:
    if isinstance(entry, str):
        return {"name": entry}
    if not isinstance(entry, dict) or "name" not in entry:
        raise ValueError(f"{what} entry {entry!r}: expected a name or a mapping with 'name' (keys: {list(valid)})")
    unknown = sorted(set(entry) - set(valid))
    if unknown:
        raise ValueError(f"{what} entry {entry['name']!r}: unknown key(s) {unknown}; valid: {list(valid)}")
    return entry


def _unique_labels(specs: Iterable, what: str) -> None:
    dupes = _repeated(s.label for s in specs)
    if dupes:
        raise ValueError(f"{what} label(s) {dupes} appear twice; give each entry its own 'label'")


def _env_kwargs(value: Any, key: str) -> dict:
    """A mapping of ``L2T-v0`` arguments (task settings belong in a task's ``overrides``)."""
    import inspect

    from l2t_env.env import L2TEnv

    kwargs = _mapping(value, key)
    valid = [n for n in inspect.signature(L2TEnv.__init__).parameters if n not in ("self", "task", "task_overrides")]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"{key}: unknown env argument(s) {unknown}; valid: {valid} (task settings go in a task's 'overrides')")
    return kwargs


def _pretrain_spec(entry: dict, probe: Any, trainable: bool, task_labels: list[str]) -> Optional[PretrainSpec]:
    """Check a teacher entry's ``pretrain:`` mapping (None when absent)."""
    if entry.get("pretrain") is None:
        return None
    name = entry["name"]
    raw = _mapping(entry["pretrain"], f"teacher {name!r}: pretrain")
    unknown = sorted(set(raw) - set(PRETRAIN_KEYS))
    if unknown:
        raise ValueError(f"teacher {name!r}: pretrain: unknown key(s) {unknown}; valid: {list(PRETRAIN_KEYS)}")
    if trainable or not hasattr(probe, "optimizer"):
        raise ValueError(f"teacher {name!r}: pretrain needs a teacher that learns online by gradient (e.g. l2t-dln)")
    seeds = _seed_list(raw.get("seeds"), f"teacher {name!r}: pretrain seeds")
    if not seeds:
        raise ValueError(f"teacher {name!r}: pretrain seeds is empty; expected a list of integers >= 0")
    episodes = raw.get("episodes")
    if episodes is not None and not (isinstance(episodes, int) and not isinstance(episodes, bool) and episodes >= 1):
        raise ValueError(f"teacher {name!r}: pretrain episodes={episodes!r}: expected an integer >= 1")
    tasks = raw.get("tasks")
    if tasks is not None:
        if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
            raise ValueError(f"teacher {name!r}: pretrain tasks={tasks!r}: expected a non-empty list of task labels or names")
        from l2t_env.tasks import load_task

        for t in tasks:
            if t not in task_labels:
                load_task(t)  # unknown task: raises with the valid ones
    online = raw.get("online", False)
    if not isinstance(online, bool):
        raise ValueError(f"teacher {name!r}: pretrain online={online!r}: expected true or false")
    return PretrainSpec(seeds=seeds, episodes=episodes, tasks=tasks, online=online)


def load_bench_config(config: Union[str, Path, dict]) -> BenchConfig:
    """Read and check a benchmark config: unknown keys, teachers and tasks raise with the valid ones,
    and the training seeds must be disjoint from the evaluation seeds."""
    from l2t_agents import make_teacher
    from l2t_bench.episodes import check_checkpoint_every
    from l2t_env.tasks import load_task

    if isinstance(config, dict):
        raw, default_name = dict(config), "bench"
    else:
        path = resolve_config_path(config)
        raw, default_name = read_yaml(path), path.stem
    unknown = sorted(set(raw) - set(BENCH_KEYS))
    if unknown:
        raise ValueError(f"bench config: unknown key(s) {unknown}; valid: {list(BENCH_KEYS)}")
    for key in ("tasks", "teachers", "seeds"):
        if not raw.get(key):
            raise ValueError(f"bench config: {key!r} is missing or empty")
    imports = raw.get("imports") or []
    if not isinstance(imports, list) or not all(isinstance(m, str) and m for m in imports):
        raise ValueError(f"imports={imports!r}: expected a list of module names")
    import_modules(imports)
    max_retries = raw.get("max_retries", DEFAULT_MAX_RETRIES)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries={max_retries!r}: expected an integer >= 0")

    task_overrides = _mapping(raw.get("task_overrides"), "task_overrides")
    tasks = []
    for entry in raw["tasks"]:
        e = _entry(entry, TASK_ENTRY_KEYS, "task")
        overrides = {**task_overrides, **_mapping(e.get("overrides"), f"task {e['name']!r}: overrides")}
        load_task(e["name"], **overrides)  # unknown task or key: raises with the valid ones
        resources = _resources(e.get("resources"), f"task {e['name']!r}: ")
        tasks.append(TaskSpec(label=str(e.get("label", e["name"])), name=str(e["name"]), overrides=overrides, resources=resources))
    _unique_labels(tasks, "task")

    teachers = []
    for entry, grid_of, point in _expand_grids(raw["teachers"]):
        e = _entry(entry, TEACHER_ENTRY_KEYS, "teacher")
        kwargs = _mapping(e.get("kwargs"), f"teacher {e['name']!r}: kwargs")
        try:
            probe = make_teacher(e["name"], **kwargs)
        except TypeError as err:
            raise ValueError(f"teacher {e['name']!r}: bad kwargs {kwargs}: {err}") from err
        trainable = callable(getattr(probe, "train", None))
        agent_file = agent_sha = None
        if e.get("load") is not None:
            agent_file, agent_sha = _agent_file(e["load"], probe, e["name"])
            trainable = False  # trained elsewhere: acts frozen here
        env_kwargs = _env_kwargs(e.get("env_kwargs"), f"teacher {e['name']!r}: env_kwargs")
        pretrain = _pretrain_spec(e, probe, trainable, [t.label for t in tasks])
        teachers.append(
            TeacherSpec(
                label=str(e.get("label", e["name"])),
                name=str(e["name"]),
                kwargs=kwargs,
                env_kwargs=env_kwargs,
                trainable=trainable,
                hyperparams=getattr(probe, "hyperparams", None) if trainable else None,
                default_timesteps=getattr(probe, "n_timesteps", None) if trainable else None,
                pretrain=pretrain,
                resources=_resources(e.get("resources"), f"teacher {e['name']!r}: "),
                batched=bool(getattr(probe, "batched", False)) and pretrain is None,
                baseline=bool(getattr(probe, "baseline", False)),
                grid_of=grid_of,
                grid_point=point,
                agent_file=agent_file,
                agent_sha256=agent_sha,
            )
        )
    _unique_labels(teachers, "teacher")

    seeds = _seed_list(raw["seeds"], "seeds")
    train_seeds = _seed_list(raw.get("train_seeds") or [], "train_seeds")
    trainable = [t.label for t in teachers if t.trainable]
    if trainable and not train_seeds:
        raise ValueError(f"teachers {trainable} are trained before evaluation: give 'train_seeds' (disjoint from 'seeds')")
    for t in teachers:
        if t.pretrain is not None:
            shared = sorted(set(seeds) & set(t.pretrain.seeds))
            if shared:
                raise ValueError(
                    f"teacher {t.label!r}: pretrain seeds and seeds share {shared}: a teacher must not be evaluated on a "
                    f"seed it was trained on; seeds={seeds}, pretrain seeds={t.pretrain.seeds}"
                )
    for t in teachers:
        if t.agent_file is not None:
            trained_on = probe_info(t.agent_file).get("meta", {}).get("train_seeds", [])
            shared = sorted(set(seeds) & set(trained_on))
            if shared:
                raise ValueError(f"teacher {t.label!r}: the agent {t.agent_file} was trained on seed(s) {shared} of this bench's seeds; "
                                 "a teacher must not be evaluated on a seed it was trained on")
    overlap = sorted(set(seeds) & set(train_seeds))
    if overlap:
        raise ValueError(
            f"train_seeds and seeds share {overlap}: a teacher must not be evaluated on a seed it was trained on; "
            f"seeds={seeds}, train_seeds={train_seeds}"
        )
    steps = raw.get("train_timesteps")
    if isinstance(steps, dict):
        bad = sorted(set(steps) - set(trainable))
        if bad:
            raise ValueError(f"train_timesteps names {bad}, which are not trainable teachers here; valid: {trainable}")
        values = list(steps.values())
    else:
        values = [] if steps is None else [steps]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise ValueError(f"train_timesteps={steps!r}: expected an integer >= 1 or a mapping teacher -> integer")
    return BenchConfig(
        name=str(raw.get("name", default_name)),
        tasks=tasks,
        teachers=teachers,
        seeds=seeds,
        train_seeds=train_seeds,
        train_timesteps=steps,
        env_kwargs=_env_kwargs(raw.get("env_kwargs"), "env_kwargs"),
        device=str(raw.get("device", "auto")),
        reference=str(raw.get("reference", "best")),
        resources=_resources(raw.get("resources"), ""),
        max_retries=max_retries,
        imports=list(imports),
        checkpoint_every=check_checkpoint_every(raw.get("checkpoint_every"), "bench config: checkpoint_every"),
        batch_seeds=_flag(raw.get("batch_seeds", True), "batch_seeds"),
        workers=check_workers(raw.get("workers", 1), "bench config: workers"),
        eval_every=_eval_every(raw.get("eval_every")),
        train_eval=_train_eval(raw.get("train_eval"), seeds, train_seeds),
        raw=raw,
    )


def _train_eval(value: Any, seeds: list[int], train_seeds: list[int]) -> Optional[dict]:
    """``train_eval: {every, seeds}`` checked: held-out seeds disjoint from the evaluation and training seeds."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"every", "seeds"}:
        raise ValueError(f"bench config: train_eval={value!r}, expected a mapping with exactly 'every' (env steps) and 'seeds'")
    every = value["every"]
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"bench config: train_eval.every={every!r}, expected an integer >= 1 (env steps between evaluations)")
    held_out = _seed_list(value["seeds"], "train_eval.seeds")
    for other, name in ((seeds, "seeds"), (train_seeds, "train_seeds")):
        shared = sorted(set(held_out) & set(other))
        if shared:
            raise ValueError(f"bench config: train_eval.seeds and {name} share {shared}: the learning curve's seeds must be held out from both")
    return {"every": every, "seeds": held_out}


def _eval_every(value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"bench config: eval_every={value!r}, expected an integer >= 1 (teaching steps between evaluations)")
    return value


def _expand_grids(entries: Sequence[Any]) -> list[tuple[Any, Optional[str], Optional[dict]]]:
    """Teacher entries with ``grid: {kwarg: [values]}`` as one entry per grid point (labelled
    ``"LABEL [k=v, ...]"``, kwargs merged), each with its group label and point; others as given.

    The summary adds a row ``LABEL`` that picks, per seed, the point of best validation accuracy
    (:func:`l2t_bench.selection.select_grid`)."""
    import itertools

    out: list[tuple[Any, Optional[str], Optional[dict]]] = []
    for entry in entries:
        if not isinstance(entry, dict) or "grid" not in entry:
            out.append((entry, None, None))
            continue
        grid = entry["grid"]
        name = entry.get("name")
        if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
            raise ValueError(f"teacher {name!r}: grid={grid!r}, expected a mapping kwarg -> non-empty list of values")
        kwargs = _mapping(entry.get("kwargs"), f"teacher {name!r}: kwargs")
        clash = sorted(set(grid) & set(kwargs))
        if clash:
            raise ValueError(f"teacher {name!r}: {clash} in both kwargs and grid; give each in one place")
        label = str(entry.get("label", name))
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            point = dict(zip(keys, values))
            sub = {k: v for k, v in entry.items() if k != "grid"}
            sub["kwargs"] = {**kwargs, **point}
            sub["label"] = f"{label} [{', '.join(f'{k}={v}' for k, v in point.items())}]"
            out.append((sub, label, point))
    return out


def check_workers(value: Any, what: str) -> int:
    """A number of local worker processes: an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what}={value!r}: expected an integer >= 1 (1: the runs one after another in this process)")
    return value


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"bench config: {key}={value!r}, expected true or false")
    return value


def config_hash(cfg: BenchConfig, task: TaskSpec, teacher: TeacherSpec, *, batched: Optional[bool] = None) -> str:
    """A short hash of everything but the seed that shapes a run (not the device).

    ``batched=False`` leaves out ``batch_seeds``: the hash of what a trained agent depends on
    (trained the same whether its seeds are then evaluated batched or one by one)."""
    what: dict[str, Any] = {
        "task": task.name,
        "task_overrides": task.overrides,
        "env_kwargs": cfg.env_kwargs_for(teacher),
        "teacher": teacher.name,
        "teacher_kwargs": teacher.kwargs,
    }
    if teacher.trainable:
        what.update(hyperparams=teacher.hyperparams, train_seeds=cfg.train_seeds, train_timesteps=cfg.timesteps(teacher))
    if teacher.agent_file is not None:
        what["agent_sha256"] = teacher.agent_sha256
    if teacher.pretrain is not None:
        what.update(pretrain=pretrain_hash(cfg, task, teacher), online=teacher.pretrain.online)
    if (cfg.batches(teacher) if batched is None else batched):
        what["batch_seeds"] = True
    if batched is None:  # an evaluation run (not a trained agent's identity): its early-stopping cadence
        what["eval_every"] = cfg.monitor_every(task)
    blob = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def pretrain_tasks(cfg: BenchConfig, task: TaskSpec, teacher: TeacherSpec) -> list[TaskSpec]:
    """The tasks a pretrained teacher evaluated on ``task`` was trained on (bench labels resolved,
    other names taken with the bench's ``task_overrides``)."""
    assert teacher.pretrain is not None
    if teacher.pretrain.tasks is None:
        return [task]
    by_label = {t.label: t for t in cfg.tasks}
    overrides = _mapping(cfg.raw.get("task_overrides"), "task_overrides")
    return [by_label.get(name) or TaskSpec(label=name, name=name, overrides=overrides) for name in teacher.pretrain.tasks]


def pretrain_hash(cfg: BenchConfig, task: TaskSpec, teacher: TeacherSpec) -> str:
    """The identity of a pretrained teacher: what it is and what it was trained on, not its label,
    not ``online`` and not the task it is evaluated on (unless it was pretrained on that task)."""
    assert teacher.pretrain is not None
    what = {
        "teacher": teacher.name,
        "teacher_kwargs": teacher.kwargs,
        "env_kwargs": cfg.env_kwargs_for(teacher),
        "tasks": [(t.name, t.overrides) for t in pretrain_tasks(cfg, task, teacher)],
        "seeds": teacher.pretrain.seeds,
        "episodes": teacher.pretrain.episodes,
    }
    blob = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def plan_runs(cfg: BenchConfig) -> list[RunSpec]:
    """Every run of the benchmark (of the selected labels), task by task, teacher by teacher, seed by seed."""
    return [
        RunSpec(task, teacher, seed, config_hash(cfg, task, teacher), config_hash(cfg, task, teacher, batched=False))
        for task in cfg.tasks
        if cfg.only_tasks is None or task.label in cfg.only_tasks
        for teacher in cfg.teachers
        if cfg.only_teachers is None or teacher.label in cfg.only_teachers
        for seed in cfg.seeds
    ]
