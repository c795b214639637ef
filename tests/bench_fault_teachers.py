"""Teachers that fail on purpose, for the fault tests of the benchmark backends.

Imported through a bench config's ``imports: [bench_fault_teachers]`` (the tests put this folder on
the path of the driver and of the Ray workers), as a user's own teachers would be.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np

from l2t_agents.base import register_teacher
from l2t_agents.baselines import FixedTeacher


@register_teacher("test-raises")
class RaisingTeacher(FixedTeacher):
    """Raises on its first action: a run with a bug."""

    def act(self, obs: Any) -> np.ndarray:
        raise RuntimeError("test-raises: this teacher always fails")


@register_teacher("test-sigkill-once")
class KillOnceTeacher(FixedTeacher):
    """Kills its own process at teaching step ``kill_at`` of the first attempt (a worker that dies
    mid-run), then acts as ``fixed``.

    ``marker``: a file created just before the kill; while it exists the teacher behaves, and
    appends one line per action to ``marker + ".acts"`` (how many steps a retry ran). One env at a
    time (``batched = False``): a worker killed mid-run and resumed from its per-run checkpoint is
    the one-by-one path (``fixed``, its parent, would batch its seeds).
    """

    batched = False

    def __init__(self, marker: str, kill_at: int = 0) -> None:
        super().__init__()
        self.marker, self.kill_at = Path(marker), int(kill_at)

    def act(self, obs: Any) -> np.ndarray:
        step = int(self.env.unwrapped.t)  # teaching steps taken so far
        if not self.marker.exists():
            if step >= self.kill_at:
                self.marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
        else:
            with open(f"{self.marker}.acts", "a") as fh:
                fh.write(f"{step}\n")
        return super().act(obs)


@register_teacher("test-sleeps")
class SleepingTeacher(FixedTeacher):
    """Sleeps for ``seconds`` on its first action: a long run to interrupt."""

    batched = False

    def __init__(self, seconds: float = 60.0) -> None:
        super().__init__()
        self.seconds = float(seconds)

    def act(self, obs: Any) -> np.ndarray:
        import time

        time.sleep(self.seconds)
        return super().act(obs)


@register_teacher("test-announces")
class AnnouncingTeacher(FixedTeacher):
    """On its first action, writes a file named after its seed into ``folder`` holding the Ray node
    it runs on (or ``local``), then sleeps ``seconds``: a run whose node the test can see and remove
    while it is in progress. Then acts as ``fixed``; one env at a time (``batched = False``)."""

    batched = False

    def __init__(self, folder: str, seconds: float = 0.0) -> None:
        super().__init__()
        self.folder, self.seconds = Path(folder), float(seconds)

    def act(self, obs: Any) -> np.ndarray:
        if int(self.env.unwrapped.t) == 0:
            import sys
            import time

            ray = sys.modules.get("ray")
            node = ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else "local"
            seed = int(self.env.unwrapped.np_random_seed)
            with open(self.folder / f"seed{seed}.{os.getpid()}", "w") as fh:
                fh.write(node)
            time.sleep(self.seconds)
        return super().act(obs)


class _SlowToPickle:
    """Sleeps while it is pickled: it stretches a checkpoint's write (the ``.tmp`` file is open) to
    ``seconds``, so that a test can kill the process in the middle of it. Unpickles as a float."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)

    def __reduce__(self) -> tuple:
        import time

        time.sleep(self.seconds)
        return (float, (self.seconds,))


@register_teacher("test-slow-checkpoint")
class SlowCheckpointTeacher(FixedTeacher):
    """``fixed`` whose mid-episode checkpoints take ``seconds`` to write; one env at a time."""

    batched = False

    def __init__(self, seconds: float = 1.0) -> None:
        super().__init__()
        self.seconds = float(seconds)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "slow": _SlowToPickle(self.seconds)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict({k: v for k, v in state.items() if k != "slow"})
