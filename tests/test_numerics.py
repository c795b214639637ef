"""Pinned numerics: the pin sets what it says (in fresh processes), and every run record says what it ran under."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from l2t_bench import cli
from l2t_bench.records import read_runs
from l2t_bench.numerics import PIN_FLAG, PINNED_ENV, cpu_model, describe, is_pinned

REPO = Path(__file__).resolve().parent.parent


def clean_env() -> dict:
    """This environment without any pin, so that the child starts from torch's defaults."""
    return {k: v for k, v in os.environ.items() if k not in (*PINNED_ENV, PIN_FLAG)}


def run_python(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], env=clean_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()


def check_pinned(record: dict) -> None:
    assert record["pinned"] is True
    assert record["cpu_capability"] == "DEFAULT"
    assert record["threads"] == 1
    assert record["mkldnn"] is False and record["nnpack"] is False
    assert record["env"] == {k: v for k, v in PINNED_ENV.items()}
    assert record["cpu"] == cpu_model() and record["torch"] == torch.__version__


def test_pin_before_torch_loads_sets_the_environment_in_place():
    lines = run_python(
        "import json, os, sys\n"
        "from l2t_bench.numerics import pin_numerics\n"
        "print('run', 'torch' in sys.modules)\n"
        "record = pin_numerics()\n"
        "import torch\n"
        "print(json.dumps({'record': record, 'threads': torch.get_num_threads(), 'capability': torch.backends.cpu.get_cpu_capability()}))\n"
    )
    assert lines[0] == "run False" and len(lines) == 2  # no re-execution was needed
    out = json.loads(lines[1])
    check_pinned(out["record"])
    assert (out["threads"], out["capability"]) == (1, "DEFAULT")


def test_pin_after_torch_loaded_reexecutes_the_process_pinned():
    lines = run_python(
        "import json, os\n"
        "import torch\n"
        "print('run', os.environ.get('L2T_PIN_NUMERICS'), torch.backends.cpu.get_cpu_capability() == 'DEFAULT')\n"
        "from l2t_bench.numerics import pin_numerics\n"
        "print(json.dumps(pin_numerics()))\n"
    )
    # the first process loaded torch unpinned (its own kernels) and was replaced by a pinned one
    assert lines[0] == "run None False" and lines[1] == "run 1 True"
    check_pinned(json.loads(lines[2]))


def test_bench_records_numerics_and_pin_numerics_runs_pinned(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "name: tiny\ntasks: [{name: digits-mlp, overrides: {teaching_steps: 2, unroll_steps: 2}}]\n"
        "teachers: [ce]\nseeds: [0]\ndevice: cpu\n"
    )
    plain, pinned = tmp_path / "plain", tmp_path / "pinned"
    assert cli.main(["bench", "--config", str(config), "--out", str(plain), "--quiet"]) == 0
    (record,) = read_runs(plain / "runs.jsonl")
    n = record["numerics"]
    assert n["threads"] == torch.get_num_threads() and n["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert n["torch"] == torch.__version__ and n["cpu"] == cpu_model()
    assert n["pinned"] is is_pinned()  # False unless the suite itself runs pinned

    assert cli.main(["bench", "--config", str(config), "--out", str(pinned), "--quiet", "--pin-numerics"]) == 0
    (pinned_record,) = read_runs(pinned / "runs.jsonl")
    check_pinned(pinned_record["numerics"])
    assert describe([pinned_record]).startswith(f"numerics: {cpu_model()}, torch {torch.__version__}, DEFAULT kernels, 1 thread(s), pinned")
    mixed = describe([record, pinned_record])
    if not is_pinned():
        assert mixed.startswith("numerics differ between runs") and "1 run(s) on" in mixed and "not pinned" in mixed
