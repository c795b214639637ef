"""Learning curves of SB3 teachers: the frozen agent evaluated on held-out seeds while it trains.

:class:`LearningCurve` is an SB3 callback. Every ``every`` env steps (and before the first and
after the last) it takes the policy as it is (``teacher.refresh()``), runs one episode on each
held-out seed as one native vector env (the agent acting deterministically, as it will in
evaluation), appends a row to a CSV file (:data:`COLUMNS`: env steps, wall time, the mean
episode return, final and early-stopped test accuracy, each mean with a 95% bootstrap interval
over the seeds), and saves the agent and a training snapshot (``--resume`` continues from it).
:func:`plot_curves` draws one or many curves in one figure.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from l2t_bench.stats import bootstrap_ci

COLUMNS = (
    "env_steps", "wall_time_s", "episodes",
    "return_mean", "return_ci_low", "return_ci_high",
    "test_acc_mean", "test_acc_ci_low", "test_acc_ci_high",
    "es_test_acc_mean", "es_test_acc_ci_low", "es_test_acc_ci_high",
)


def curve_row(env_steps: int, wall_time: float, episodes: int, records: Sequence[Any]) -> dict[str, float]:
    """One CSV row from the evaluation episodes' records (one per held-out seed)."""
    row: dict[str, float] = {"env_steps": int(env_steps), "wall_time_s": round(float(wall_time), 2), "episodes": int(episodes)}
    values = {
        "return": [float(np.sum(r.curves["reward"])) for r in records],
        "test_acc": [float(r.final.get("test_acc", np.nan)) for r in records],
        "es_test_acc": [r.early_stopped()["test_acc_at_best_val"] for r in records],
    }
    for key, xs in values.items():
        x = np.asarray([np.nan if v is None else v for v in xs], dtype=float)
        lo, hi = bootstrap_ci(x)
        row[f"{key}_mean"] = float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")
        row[f"{key}_ci_low"], row[f"{key}_ci_high"] = lo, hi
    return row


def read_curve(path: Union[str, Path]) -> list[dict[str, float]]:
    """The rows of a learning-curve CSV (numbers as floats); [] if there is none yet."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def append_row(path: Union[str, Path], row: dict[str, float]) -> None:
    path = Path(path)
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: row[k] for k in COLUMNS})


def plot_curves(curves: dict[str, Sequence[dict]], path: Union[str, Path], title: str = "") -> Path:
    """Mean episode return and final / early-stopped test accuracy against env steps, one line per
    curve (label -> rows) with its 95% interval as a band, in one figure of three panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("return", "mean episode return"), ("test_acc", "final test accuracy"), ("es_test_acc", "early-stopped test accuracy"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for label, rows in curves.items():
        if not rows:
            continue
        x = np.asarray([r["env_steps"] for r in rows])
        for ax, (key, name) in zip(axes, panels):
            mean = np.asarray([r[f"{key}_mean"] for r in rows])
            line = ax.plot(x, mean, marker="o", ms=3, label=label)[0]
            ax.fill_between(x, [r[f"{key}_ci_low"] for r in rows], [r[f"{key}_ci_high"] for r in rows], color=line.get_color(), alpha=0.2)
            ax.set_xlabel("env steps (teaching steps) trained")
            ax.set_ylabel(name)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class LearningCurve(BaseCallback):
    """Evaluate the agent every ``every`` env steps while an :class:`~l2t_agents.sb3_teachers.SB3Teacher`
    trains; append to ``csv_path``; save the agent at ``agent_path`` and a training snapshot at
    ``snapshot_path`` after each evaluation (either may be None).

    Args:
        teacher: the teacher whose ``train()`` runs this callback.
        make_eval_env: builds the vector env of the held-out seeds (called once, closed at the end).
        eval_seeds: one episode per seed, all as one vector env.
        every: env steps between evaluations (counted as SB3 counts them: one per sub-env step).
        report: called with each row (a log line, a progress bar).
        plot_path: redraw the curve there after each evaluation; ``label`` names it.

    ``wall_time_s`` is the teacher's training time so far (``meta["train_time"]``, evaluations
    included, summed over resumed parts); ``episodes`` counts the training episodes finished.
    """

    def __init__(
        self,
        teacher: Any,
        make_eval_env: Callable[[], Any],
        eval_seeds: Sequence[int],
        every: int,
        csv_path: Union[str, Path],
        agent_path: Union[str, Path, None] = None,
        snapshot_path: Union[str, Path, None] = None,
        report: Optional[Callable[[dict], Any]] = None,
        plot_path: Union[str, Path, None] = None,
        label: str = "agent",
    ) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"evaluation every {every} env steps; expected >= 1")
        self.teacher, self.make_eval_env, self.eval_seeds = teacher, make_eval_env, [int(s) for s in eval_seeds]
        self.every = int(every)
        self.csv_path = Path(csv_path)
        self.agent_path = None if agent_path is None else Path(agent_path)
        self.snapshot_path = None if snapshot_path is None else Path(snapshot_path)
        self.plot_path = None if plot_path is None else Path(plot_path)
        self.report, self.label = report, label
        self._env: Any = None
        self._next = 0
        self._episodes = 0

    # ------------------------------------------------------------------ SB3 hooks
    def _on_training_start(self) -> None:
        rows = read_curve(self.csv_path)
        done = int(self.num_timesteps)
        self._next = (done // self.every + 1) * self.every if rows else done
        self._episodes = int(rows[-1]["episodes"]) if rows else 0
        if not rows or rows[-1]["env_steps"] < done:
            self.evaluate()

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            self._episodes += int("episode" in info)
        if self.num_timesteps >= self._next:
            self.evaluate()
        return True

    def _on_training_end(self) -> None:
        rows = read_curve(self.csv_path)
        if not rows or rows[-1]["env_steps"] < self.num_timesteps:
            self.evaluate()
        if self._env is not None:
            self._env.close()
            self._env = None

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict:
        """Evaluate the policy as it is now, append the row, save agent and snapshot; return the row."""
        from l2t_agents.evaluation import run_episodes

        self.teacher.refresh()
        if self._env is None:
            self._env = self.make_eval_env()
        records = run_episodes(self._env, self.teacher, self.eval_seeds)
        steps = int(self.num_timesteps)
        row = curve_row(steps, self.teacher.meta.get("train_time", 0.0), self._episodes, records)
        append_row(self.csv_path, row)
        if self.agent_path is not None:
            self.teacher.save(self.agent_path)
        if self.snapshot_path is not None:
            self.teacher.save_training(self.snapshot_path)
        if self.plot_path is not None:
            plot_curves({self.label: read_curve(self.csv_path)}, self.plot_path)
        self._next = (steps // self.every + 1) * self.every
        if self.report is not None:
            self.report(row)
        return row
