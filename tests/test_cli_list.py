"""``l2t list`` names what is built in, and the teachers an extra would add when it is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter with stable-baselines3 made unimportable (a None entry in
# sys.modules makes `import stable_baselines3` raise ImportError), as on an install without [sb3].
_WITHOUT_SB3 = """
import sys
sys.modules["stable_baselines3"] = None
from l2t_bench.cli import main
code = main(["list"])
from l2t_agents import make_teacher
try:
    make_teacher("ppo")
except ImportError as err:
    print("ERROR:", err)
sys.exit(code)
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_list_without_sb3_names_the_missing_teachers_and_the_extra():
    out = _run(_WITHOUT_SB3)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    teachers = next(line for line in lines if line.startswith("teachers:"))
    assert "ppo" not in teachers and "l2t-dln" in teachers
    assert any("not installed: a2c, ppo, sac, td3" in line and "l2t-env[sb3]" in line for line in lines), out.stdout
    error = next(line for line in lines if line.startswith("ERROR:"))
    assert "'ppo'" in error and "pip install 'l2t-env[sb3]'" in error


def test_list_with_sb3_shows_every_teacher_and_no_missing_line():
    out = _run("from l2t_bench.cli import main; raise SystemExit(main(['list']))")
    assert out.returncode == 0, out.stderr
    assert "not installed" not in out.stdout
    teachers = next(line for line in out.stdout.splitlines() if line.startswith("teachers:"))
    for name in ("ce", "fixed", "hypergrad", "l2t-dln", "ppo", "sac"):
        assert name in teachers
    assert "digits-mlp" in out.stdout


def test_teachers_install_as_l2t_agents_not_agents(tmp_path):
    """The agents/ folder is importable as l2t_agents only; no top-level `agents` of ours is installed."""
    code = (
        "import importlib.util, l2t_agents\n"
        "spec = importlib.util.find_spec('agents')\n"
        "print(l2t_agents.__name__, l2t_agents.make_teacher('ce').__class__.__name__)\n"
        "print('agents:', None if spec is None else spec.origin)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("l2t_agents ")
    origin = lines[1].removeprefix("agents: ")
    assert origin == "None" or not origin.startswith(str(REPO)), f"our agents/ folder is importable as `agents`: {origin}"
