"""``l2t bench``: every teacher x task x seed of a config, resumable, summarised across seeds.

A benchmark config (YAML; ``configs/bench/quick.yaml`` is the worked example)::

    tasks: [digits-mlp, {name: digits-mlp, label: digits-mlp-50, overrides: {teaching_steps: 50}}]
    teachers: [ce, hypergrad, {name: ppo, kwargs: {n_steps: 100}}]
    seeds: [0, 1, 2, 3, 4]            # evaluation seeds
    train_seeds: [1000, 1001]         # SB3 teachers train on these; must be disjoint from seeds
    train_timesteps: 2000             # or per teacher: {ppo: 2000, sac: 1000}; default: the agent YAML's
    task_overrides: {}                # for every task, under each task's own overrides
    env_kwargs: {}                    # for every env, e.g. {reward: val_acc_increase}
    device: auto
    reference: ce                     # paired differences are taken against this teacher

Each run is ``run_episode`` with a fresh teacher: ``l2t-dln`` learns online on that seed, as in
the paper; a trainable teacher (one with ``train``: the SB3 agents) is trained once per task on
``train_seeds``, saved under ``DIR/agents/``, and loaded frozen for every evaluation seed.

What ``--out DIR`` holds:

- ``runs.jsonl``: one JSON line per finished run, appended, flushed and fsynced as soon as it ends.
  A run's key is (task, teacher, seed, hash of everything else that shapes it); a rerun with the
  same DIR skips the keys already there, so an interrupted benchmark loses no finished run.
- ``agents/``: the trained agents, reused by a rerun with the same settings.
- ``summary.csv``, ``summary.md``, ``val_curves.png``, ``test_acc.png``: across seeds, per
  (task, teacher); rebuilt from ``runs.jsonl`` alone with ``--summarise-only``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from scipy.stats import trim_mean

from l2t_bench.options import jsonable
from l2t_env.config_files import builtin_names, config_dir, read_yaml

BENCH_KEYS = (
    "name", "description", "tasks", "teachers", "seeds", "train_seeds", "train_timesteps",
    "task_overrides", "env_kwargs", "device", "reference",
)
TASK_ENTRY_KEYS = ("name", "label", "overrides")
TEACHER_ENTRY_KEYS = ("name", "label", "kwargs")
RUNS_FILE = "runs.jsonl"
FINAL_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")


# ---------------------------------------------------------------------------------- config
@dataclass
class TaskSpec:
    """One task of a benchmark: a built-in name or YAML path, with overrides, under a unique label."""

    label: str
    name: str
    overrides: dict = field(default_factory=dict)


@dataclass
class TeacherSpec:
    """One teacher of a benchmark: a registry name and constructor kwargs, under a unique label."""

    label: str
    name: str
    kwargs: dict = field(default_factory=dict)
    #: has ``train``: trained on ``train_seeds`` before evaluation, then acts frozen
    trainable: bool = False
    #: what fixes a trained agent besides the kwargs (the resolved hyper-parameters), for the run key
    hyperparams: Optional[dict] = None
    default_timesteps: Optional[int] = None


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
    reference: str = "ce"
    raw: dict = field(default_factory=dict)

    def timesteps(self, teacher: TeacherSpec) -> Optional[int]:
        """The training budget of a trainable teacher: the bench's, else the agent config's."""
        if isinstance(self.train_timesteps, dict):
            return self.train_timesteps.get(teacher.label, teacher.default_timesteps)
        return self.train_timesteps if self.train_timesteps is not None else teacher.default_timesteps


@dataclass
class RunSpec:
    """One (task, teacher, seed) of the plan, with the key that identifies it in ``runs.jsonl``."""

    task: TaskSpec
    teacher: TeacherSpec
    seed: int
    config_hash: str

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


def _mapping(value: Any, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{key}={value!r}: expected a mapping")
    return dict(value)


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


def load_bench_config(config: Union[str, Path, dict]) -> BenchConfig:
    """Read and check a benchmark config: unknown keys, teachers and tasks raise with the valid ones,
    and the training seeds must be disjoint from the evaluation seeds."""
    from agents import make_teacher
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

    task_overrides = _mapping(raw.get("task_overrides"), "task_overrides")
    tasks = []
    for entry in raw["tasks"]:
        e = _entry(entry, TASK_ENTRY_KEYS, "task")
        overrides = {**task_overrides, **_mapping(e.get("overrides"), f"task {e['name']!r}: overrides")}
        load_task(e["name"], **overrides)  # unknown task or key: raises with the valid ones
        tasks.append(TaskSpec(label=str(e.get("label", e["name"])), name=str(e["name"]), overrides=overrides))
    _unique_labels(tasks, "task")

    teachers = []
    for entry in raw["teachers"]:
        e = _entry(entry, TEACHER_ENTRY_KEYS, "teacher")
        kwargs = _mapping(e.get("kwargs"), f"teacher {e['name']!r}: kwargs")
        try:
            probe = make_teacher(e["name"], **kwargs)
        except TypeError as err:
            raise ValueError(f"teacher {e['name']!r}: bad kwargs {kwargs}: {err}") from err
        trainable = callable(getattr(probe, "train", None))
        teachers.append(
            TeacherSpec(
                label=str(e.get("label", e["name"])),
                name=str(e["name"]),
                kwargs=kwargs,
                trainable=trainable,
                hyperparams=getattr(probe, "hyperparams", None) if trainable else None,
                default_timesteps=getattr(probe, "n_timesteps", None) if trainable else None,
            )
        )
    _unique_labels(teachers, "teacher")

    seeds = _seed_list(raw["seeds"], "seeds")
    train_seeds = _seed_list(raw.get("train_seeds") or [], "train_seeds")
    trainable = [t.label for t in teachers if t.trainable]
    if trainable and not train_seeds:
        raise ValueError(f"teachers {trainable} are trained before evaluation: give 'train_seeds' (disjoint from 'seeds')")
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
        env_kwargs=_mapping(raw.get("env_kwargs"), "env_kwargs"),
        device=str(raw.get("device", "auto")),
        reference=str(raw.get("reference", "ce")),
        raw=raw,
    )


def config_hash(cfg: BenchConfig, task: TaskSpec, teacher: TeacherSpec) -> str:
    """A short hash of everything but the seed that shapes a run (not the device)."""
    what: dict[str, Any] = {
        "task": task.name,
        "task_overrides": task.overrides,
        "env_kwargs": cfg.env_kwargs,
        "teacher": teacher.name,
        "teacher_kwargs": teacher.kwargs,
    }
    if teacher.trainable:
        what.update(hyperparams=teacher.hyperparams, train_seeds=cfg.train_seeds, train_timesteps=cfg.timesteps(teacher))
    blob = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def plan_runs(cfg: BenchConfig) -> list[RunSpec]:
    """Every run of the benchmark, task by task, teacher by teacher, seed by seed."""
    return [
        RunSpec(task, teacher, seed, config_hash(cfg, task, teacher))
        for task in cfg.tasks
        for teacher in cfg.teachers
        for seed in cfg.seeds
    ]


# ---------------------------------------------------------------------------------- runs.jsonl
def repair_runs_file(path: Path) -> int:
    """Cut a last line left unfinished by a killed process (it never held a finished run).

    Returns the number of bytes removed.
    """
    if not path.is_file():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with path.open("r+b") as fh:
        fh.truncate(keep)
    return len(data) - keep


def read_runs(path: Union[str, Path]) -> list[dict]:
    """The finished runs in a ``runs.jsonl`` (first line per key; an unfinished last line is ignored)."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    records, seen = [], set()
    for number, line in enumerate(lines[:-1], start=1):  # the part after the last newline is unfinished
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not a JSON line ({err}); remove that line to go on") from err
        if record.get("key") not in seen:
            seen.add(record.get("key"))
            records.append(record)
    return records


def append_run(path: Path, record: dict) -> None:
    """Append one run as one line and force it to disk before the next run starts."""
    line = json.dumps(jsonable(record)) + "\n"
    with path.open("a") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def run_record(run: RunSpec, episode: Any, agent: Optional[str], agent_train_time: Optional[float], device: str) -> dict:
    """The JSON line of a finished run: key, final metrics, summary numbers of the curves, timing."""
    val_acc = np.asarray(episode.curves["val_acc"], dtype=float)
    final = episode.final
    record: dict[str, Any] = {
        "key": run.key,
        "task": run.task.label,
        "teacher": run.teacher.label,
        "seed": run.seed,
        "config_hash": run.config_hash,
        "task_name": run.task.name,
        "teacher_name": run.teacher.name,
        "task_overrides": run.task.overrides,
        "teacher_kwargs": run.teacher.kwargs,
        **{k: final.get(k) for k in FINAL_KEYS},
        "best_val_acc": float(np.nanmax(val_acc)) if np.isfinite(val_acc).any() else None,
        "auc_val_acc": float(np.nanmean(val_acc)) if np.isfinite(val_acc).any() else None,
        "wall_time": episode.wall_time,
        "student_steps": episode.student_steps,
        "steps_per_s": episode.student_steps / episode.wall_time if episode.wall_time > 0 else None,
        "teaching_steps": episode.steps,
        "diverged": episode.diverged,
        "device": device,
        "agent": agent,
        "agent_train_time": agent_train_time,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "curves": episode.curves,
    }
    return record


# ---------------------------------------------------------------------------------- running
def agent_dir(out: Path, run: RunSpec) -> Path:
    """Where a trained agent of this task, teacher and settings is kept (seed-independent)."""
    return out / "agents" / f"{run.task.label}__{run.teacher.label}__{run.config_hash}"


def _train_agent(cfg: BenchConfig, run: RunSpec, path: Path, progress: Progress, tensorboard: Optional[Path]) -> None:
    from agents import make_teacher

    teacher = make_teacher(run.teacher.name, **run.teacher.kwargs)
    steps = cfg.timesteps(run.teacher)
    bar = progress.add_task(f"training {run.teacher.label} on {run.task.label}", total=steps or 1)
    teacher.train(
        run.task.name,
        cfg.train_seeds,
        total_timesteps=steps,
        env_kwargs={**cfg.env_kwargs, **run.task.overrides, "device": cfg.device},
        tensorboard_log=str(tensorboard) if tensorboard else None,
        progress=lambda done, total: progress.update(bar, completed=done, total=total),
    )
    teacher.save(path)
    progress.remove_task(bar)


def run_bench(
    cfg: BenchConfig,
    out: Union[str, Path],
    *,
    console: Optional[Console] = None,
    quiet: bool = False,
    tensorboard: bool = False,
) -> list[dict]:
    """Run every planned run not yet in ``out/runs.jsonl``; return the records of the whole plan.

    Trainable teachers are trained (or their saved agent reused) just before their first pending
    run on a task; every run gets a freshly made teacher and env.
    """
    import l2t_env  # noqa: F401  (registers L2T-v0)
    from agents import make_env, make_teacher, run_episode

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.yaml").write_text(yaml.safe_dump(cfg.raw, sort_keys=False))
    runs_file = out / RUNS_FILE
    cut = repair_runs_file(runs_file)
    if cut and console:
        console.print(f"[yellow]{runs_file}: dropped an unfinished last line ({cut} bytes) left by an interrupted run")
    done = {r["key"]: r for r in read_runs(runs_file)}
    plan = plan_runs(cfg)
    pending = [r for r in plan if r.key not in done]
    if console:
        console.print(
            f"bench [bold]{cfg.name}[/]: {len(cfg.tasks)} task(s) x {len(cfg.teachers)} teacher(s) x {len(cfg.seeds)} seed(s) "
            f"= {len(plan)} runs; {len(plan) - len(pending)} already in {runs_file}, {len(pending)} to run (device {cfg.device})"
        )
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, disable=quiet,
    ) as progress:
        bar = progress.add_task("runs", total=len(plan), completed=len(plan) - len(pending))
        for run in pending:
            progress.update(bar, description=f"{run.task.label} · {run.teacher.label} · seed {run.seed}")
            teacher = make_teacher(run.teacher.name, **run.teacher.kwargs)
            agent, train_time = None, None
            if run.teacher.trainable:
                path = agent_dir(out, run)
                if not path.exists():
                    _train_agent(cfg, run, path, progress, out / "tensorboard" if tensorboard else None)
                teacher.load(path)
                teacher.learning = False
                agent = str(path.relative_to(out))
                train_time = getattr(teacher, "meta", {}).get("train_time")
            env = make_env(teacher, run.task.name, device=cfg.device, **cfg.env_kwargs, **run.task.overrides)
            try:
                episode = run_episode(env, teacher, run.seed)
            finally:
                env.close()
            record = run_record(run, episode, agent, train_time, str(env.unwrapped.device))
            append_run(runs_file, record)
            done[run.key] = json.loads(json.dumps(jsonable(record)))  # as a rerun would read it back
            progress.advance(bar)
    return [done[r.key] for r in plan]


# ---------------------------------------------------------------------------------- statistics
def _finite(values: Iterable[Any]) -> np.ndarray:
    x = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    return x[np.isfinite(x)]


def bootstrap_ci(values: Iterable[float], *, resamples: int = 10_000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (seeded, so a summary is reproducible)."""
    x = _finite(values)
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = rng.choice(x, size=(resamples, x.size), replace=True).mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return (float(lo), float(hi))


def iqm(values: Iterable[float]) -> float:
    """Interquartile mean: the mean of the middle 50% (25% trimmed each side), as in rliable."""
    x = _finite(values)
    return float(trim_mean(x, 0.25)) if x.size else float("nan")


def paired_difference(a: dict, b: dict, *, resamples: int = 10_000, seed: int = 0) -> dict:
    """Mean of ``a[s] - b[s]`` over the seeds both have (finite), with its bootstrap interval."""
    seeds = sorted(s for s in set(a) & set(b) if a[s] is not None and b[s] is not None and np.isfinite(a[s]) and np.isfinite(b[s]))
    diffs = np.asarray([a[s] - b[s] for s in seeds], dtype=float)
    lo, hi = bootstrap_ci(diffs, resamples=resamples, seed=seed)
    return {"n": len(seeds), "mean": float(diffs.mean()) if diffs.size else float("nan"), "ci_low": lo, "ci_high": hi}


def _groups(records: Sequence[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["task"], r["teacher"]), []).append(r)
    return groups


def summarise(records: Sequence[dict], reference: str = "ce", *, resamples: int = 10_000, seed: int = 0) -> list[dict]:
    """One row per (task, teacher), in order of first appearance: final test accuracy across seeds
    (n, mean, std, 95% bootstrap CI, IQM), the paired difference to ``reference`` on the same
    task and seeds, and means of the other run numbers."""
    groups = _groups(records)
    rows = []
    for (task, teacher), runs in groups.items():
        acc = _finite(r["test_acc"] for r in runs)
        lo, hi = bootstrap_ci(acc, resamples=resamples, seed=seed)
        row: dict[str, Any] = {
            "task": task,
            "teacher": teacher,
            "n": int(acc.size),
            "test_acc_mean": float(acc.mean()) if acc.size else float("nan"),
            "test_acc_std": float(acc.std(ddof=1)) if acc.size > 1 else float("nan"),
            "test_acc_ci_low": lo,
            "test_acc_ci_high": hi,
            "test_acc_iqm": iqm(acc),
        }
        ref = groups.get((task, reference))
        if ref is not None and teacher != reference:
            diff = paired_difference(
                {r["seed"]: r["test_acc"] for r in runs}, {r["seed"]: r["test_acc"] for r in ref}, resamples=resamples, seed=seed
            )
        else:
            diff = {"n": 0, "mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
        row.update(
            {
                "reference": reference,
                "diff_vs_ref_mean": diff["mean"],
                "diff_vs_ref_ci_low": diff["ci_low"],
                "diff_vs_ref_ci_high": diff["ci_high"],
                "n_paired": diff["n"],
            }
        )
        for key in ("test_loss", "best_val_acc", "auc_val_acc", "wall_time", "steps_per_s", "agent_train_time"):
            x = _finite(r.get(key) for r in runs)
            row[f"{key}_mean"] = float(x.mean()) if x.size else float("nan")
        row["diverged"] = int(sum(bool(r.get("diverged")) for r in runs))
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------- reports
def _fmt(x: Any, digits: int = 4) -> str:
    return "—" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def _display_rows(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    ref = rows[0]["reference"] if rows else "ce"
    header = ["task", "teacher", "n", "test acc ± std", "95% CI", "IQM", f"Δ vs {ref} [95% CI]",
              "best val", "AUC val", "wall s", "steps/s", "div"]
    body = []
    for r in rows:
        diff = "—" if not np.isfinite(r["diff_vs_ref_mean"]) else (
            f"{r['diff_vs_ref_mean']:+.3f} [{r['diff_vs_ref_ci_low']:+.3f}, {r['diff_vs_ref_ci_high']:+.3f}]"
        )
        body.append([
            r["task"], r["teacher"], str(r["n"]),
            f"{_fmt(r['test_acc_mean'], 3)} ± {_fmt(r['test_acc_std'], 3)}",
            f"[{_fmt(r['test_acc_ci_low'], 3)}, {_fmt(r['test_acc_ci_high'], 3)}]",
            _fmt(r["test_acc_iqm"], 3), diff, _fmt(r["best_val_acc_mean"], 3), _fmt(r["auc_val_acc_mean"], 3),
            _fmt(r["wall_time_mean"], 1), _fmt(r["steps_per_s_mean"], 0), str(r["diverged"]),
        ])
    return header, body


def summary_table(rows: Sequence[dict], title: str = "final test accuracy across seeds") -> Table:
    """The summary as a rich table (what ``l2t bench`` prints). Columns: seeds (n), mean ± std,
    95% bootstrap CI and IQM of the final test accuracy, the paired difference to the reference,
    mean best and mean (AUC) validation accuracy, episode wall time, student steps/s, diverged runs."""
    header, body = _display_rows(rows)
    table = Table(title=title)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < 2 else "right", no_wrap=True)
    for line in body:
        table.add_row(*line)
    return table


def write_summary(rows: Sequence[dict], out: Union[str, Path], *, resamples: int = 10_000) -> tuple[Path, Path]:
    """``summary.csv`` (every number, full precision) and ``summary.md`` (the printed table)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "summary.csv", out / "summary.md"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["task", "teacher"])
        writer.writeheader()
        writer.writerows(rows)
    header, body = _display_rows(rows)
    ref = rows[0]["reference"] if rows else "ce"
    lines = [
        "# Benchmark summary",
        "",
        f"Final test accuracy across evaluation seeds. CI: percentile bootstrap of the mean ({resamples:,} resamples). "
        f"IQM: interquartile mean (rliable). Δ vs {ref}: mean paired difference on the same task and seeds, with its "
        "bootstrap CI. Best val / AUC: max / mean of the validation-accuracy curve (fixed validation subset). "
        "Wall time and student SGD steps per second are per episode.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
        *("| " + " | ".join(line) + " |" for line in body),
        "",
    ]
    md_path.write_text("\n".join(lines))
    return csv_path, md_path


def _figure(n_panels: int, width: float = 6.0, height: float = 4.2) -> tuple[Any, list]:
    """A figure with one panel per task, drawn with the Agg backend (no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, list(axes)


def _colours(teachers: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"] if len(teachers) <= 10 else colormaps["tab20"]
    return {t: cmap(i % cmap.N) for i, t in enumerate(teachers)}


def plot_val_curves(records: Sequence[dict], path: Union[str, Path], band: str = "std") -> Path:
    """Mean validation accuracy vs teaching step per teacher, one panel per task; the band is
    ±1 std across seeds (``band="std"``, clipped to [0, 1]) or their min-max (``band="minmax"``)."""
    from matplotlib.ticker import MaxNLocator

    if band not in ("minmax", "std"):
        raise ValueError(f"band={band!r}; valid: ['minmax', 'std']")
    groups = _groups(records)
    tasks = list(dict.fromkeys(t for t, _ in groups))
    teachers = list(dict.fromkeys(k for _, k in groups))
    colours = _colours(teachers)
    fig, axes = _figure(max(len(tasks), 1), width=6.0 + 1.6 / max(len(tasks), 1))
    for ax, task in zip(axes, tasks):
        for teacher in teachers:
            runs = groups.get((task, teacher))
            if not runs:
                continue
            curves = [np.asarray([np.nan if v is None else v for v in r["curves"]["val_acc"]], dtype=float) for r in runs]
            stack = np.full((len(curves), max(len(c) for c in curves)), np.nan)
            for i, c in enumerate(curves):
                stack[i, : len(c)] = c
            with warnings.catch_warnings():  # all-NaN columns after a diverged run's early end
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(stack, axis=0)
                if band == "minmax":
                    lo, hi = np.nanmin(stack, axis=0), np.nanmax(stack, axis=0)
                else:
                    sd = np.nanstd(stack, axis=0)
                    lo, hi = np.clip(mean - sd, 0, 1), np.clip(mean + sd, 0, 1)
            steps = np.arange(stack.shape[1])
            ax.plot(steps, mean, color=colours[teacher], label=f"{teacher} (n={len(runs)})", lw=1.5)
            ax.fill_between(steps, lo, hi, color=colours[teacher], alpha=0.07, lw=0)
        ax.set_title(f"{task}: mean across seeds, band {'±1 std' if band == 'std' else 'min-max'}")
        ax.set_xlabel("teaching step")
        ax.set_ylabel("validation accuracy (fixed subset)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    legend: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label.split(" (n=")[0], (handle, label))
    fig.legend([h for h, _ in legend.values()], [lab for _, lab in legend.values()], loc="outside right upper", fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def plot_test_acc(rows: Sequence[dict], path: Union[str, Path], records: Optional[Sequence[dict]] = None) -> Path:
    """Bar chart of mean final test accuracy per teacher with the 95% bootstrap CI as error bars,
    one panel per task; each seed's result is drawn as a dot when ``records`` are given."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    teachers = list(dict.fromkeys(r["teacher"] for r in rows))
    colours = _colours(teachers)
    fig, axes = _figure(max(len(tasks), 1), width=max(4.0, 0.75 * len(teachers) + 1.5))
    by_run = _groups(records or [])
    for ax, task in zip(axes, tasks):
        mine = [r for r in rows if r["task"] == task]
        x = np.arange(len(mine))
        means = np.asarray([r["test_acc_mean"] for r in mine])
        err = np.asarray([[m - r["test_acc_ci_low"], r["test_acc_ci_high"] - m] for m, r in zip(means, mine)]).T
        ax.bar(x, means, yerr=np.nan_to_num(err), capsize=4, color=[colours[r["teacher"]] for r in mine], alpha=0.8)
        for i, r in enumerate(mine):
            seeds = [s["test_acc"] for s in by_run.get((task, r["teacher"]), []) if s.get("test_acc") is not None]
            if seeds:
                jitter = np.linspace(-0.18, 0.18, len(seeds)) if len(seeds) > 1 else np.zeros(1)
                ax.scatter(i + jitter, seeds, s=8, color="black", zorder=3)
            ax.annotate(_fmt(r["test_acc_mean"], 3), (i, r["test_acc_ci_high"] if np.isfinite(r["test_acc_ci_high"]) else means[i]),
                        xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7)
        ax.set_xticks(x, [r["teacher"] for r in mine], rotation=30, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("final test accuracy")
        ax.set_title(f"{task} (mean, 95% bootstrap CI; dots: seeds)")
        ax.grid(axis="y", alpha=0.3)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def report(records: Sequence[dict], out: Union[str, Path], reference: str = "ce", console: Optional[Console] = None) -> list[dict]:
    """Summarise records and write ``summary.csv``/``summary.md``/``val_curves.png``/``test_acc.png``."""
    out = Path(out)
    rows = summarise(records, reference)
    csv_path, md_path = write_summary(rows, out)
    curves = plot_val_curves(records, out / "val_curves.png")
    bars = plot_test_acc(rows, out / "test_acc.png", records)
    if console:
        console.print(summary_table(rows))
        console.print(f"wrote {csv_path}, {md_path}, {curves}, {bars}")
    return rows


# ---------------------------------------------------------------------------------- command line
def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="benchmark teachers x tasks x seeds from a config (resumable)")
    p.add_argument("--config", help=f"bench YAML, or a built-in name ({', '.join(builtin_names('bench')) or 'none yet'})")
    p.add_argument("--out", help="output folder (default runs/bench/<config name>); rerunning into it resumes")
    p.add_argument("--device", help="override the config's device: auto, cpu, cuda, ...")
    p.add_argument("--summarise-only", action="store_true", help="only rebuild the summary and plots from DIR/runs.jsonl")
    p.add_argument("--tensorboard", action="store_true", help="log SB3 training to DIR/tensorboard")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=200)  # a pipe or log file: do not fold the table into 80 columns
    if not args.config and not args.summarise_only:
        raise ValueError("l2t bench needs --config (a YAML file or a built-in name), or --summarise-only --out DIR")
    cfg = load_bench_config(args.config) if args.config else None
    if cfg is not None and args.device:
        cfg.device = args.device
    if args.out is None and cfg is None:
        raise ValueError("--summarise-only needs --out DIR (the folder holding runs.jsonl)")
    out = Path(args.out) if args.out else Path("runs/bench") / cfg.name
    start = time.perf_counter()
    if args.summarise_only:
        records = read_runs(out / RUNS_FILE)
        if cfg is not None:  # only the runs this config plans, in its order
            by_key = {r["key"]: r for r in records}
            records = [by_key[r.key] for r in plan_runs(cfg) if r.key in by_key]
        if not records:
            raise ValueError(f"{out / RUNS_FILE} holds no runs" + (f" of config {cfg.name!r}" if cfg else ""))
    else:
        try:
            records = run_bench(cfg, out, console=console, quiet=args.quiet, tensorboard=args.tensorboard)
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted: finished runs are in {out / RUNS_FILE}; rerun the same command to resume")
            return 130
    report(records, out, reference=cfg.reference if cfg else "ce", console=console)
    if not args.summarise_only:
        console.print(f"bench wall time {time.perf_counter() - start:.0f} s")
    return 0
