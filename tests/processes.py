"""Test helper: start a command, SIGKILL it as soon as a file appears (a checkpoint written)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Mapping, Sequence


def kill_once_written(args: Sequence[str], env: Mapping[str, str], path: Path, timeout: float = 300) -> None:
    """Run ``args``; SIGKILL the process once ``path`` exists (or when it exits or ``timeout``
    passes), and check that it was the kill that ended it, not a finished run."""
    proc = subprocess.Popen(list(args), env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]  # killed, not finished
