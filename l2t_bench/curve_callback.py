"""The SB3 callback that draws a learning curve while a teacher trains (``l2t train``, bench ``train_eval``).

Every ``every`` env steps (and before the first and after the last) it takes the policy as it is
(``teacher.refresh()``), runs one episode on each held-out seed as one native vector env (the
agent acting deterministically, as it will in evaluation), appends a row to a CSV file
(:mod:`l2t_bench.learning_curves`), and saves the agent and a training snapshot (which
``train(resume=...)`` continues).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from stable_baselines3.common.callbacks import BaseCallback

from l2t_bench.learning_curves import append_row, curve_row, plot_curves, read_curve


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
