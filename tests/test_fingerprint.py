"""The committed fingerprint of pinned runs (``benchmarks/fingerprint.py``): this machine reproduces
a subset of it bit for bit, and the comparison names a perturbed teacher with its first differing
step and fails, while the untouched teachers read "equal"."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from l2t_bench.numerics import PIN_FLAG, PINNED_ENV

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "fingerprint.py"
REFERENCE = REPO / "benchmarks" / "fingerprints" / "digits.json"
#: a cheap subset: the plain, the hypergradient (double backward) and the one-by-one (l2t-dlf) paths (the full check covers the rest)
SUBSET = ["digits-mlp/ce", "digits-mlp/hypergrad", "digits-mlp/l2t-dlf"]


def _fingerprint_module():
    spec = importlib.util.spec_from_file_location("fingerprint", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (*PINNED_ENV, PIN_FLAG)}  # the script pins itself
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def _lines(text: str) -> dict[str, str]:
    """``{entry: its verdict}`` from the comparison's output."""
    out = {}
    for line in text.splitlines():
        name, _, verdict = line.partition("  ")
        if "/" in name and verdict.strip():
            out[name.strip()] = verdict.strip()
    return out


def _perturbed(reference: dict) -> dict:
    """The reference with one per-step state hash of hypergrad (seed 1, after teaching step 5) changed."""
    bad = copy.deepcopy(reference)
    states = bad["entries"]["digits-mlp/hypergrad"]["seeds"]["1"]["states"]
    states[4] = "0" * 16 if states[4] != "0" * 16 else "1" * 16
    return bad


def test_perturbed_copy_names_the_teacher_and_its_first_differing_step(tmp_path):
    """The comparison alone (no runs): each kind of perturbation is caught and located."""
    reference = json.loads(REFERENCE.read_text())
    ref_file = tmp_path / "ref.json"
    ref_file.write_text(json.dumps(reference))
    cases = {"state hash": (_perturbed(reference), "digits-mlp/hypergrad", "first differing step 5 (seeds 1;")}
    val = copy.deepcopy(reference)
    val["entries"]["digits-mlp/l2t-dln"]["seeds"]["0"]["val_loss"][3] += 1e-9
    cases["val loss"] = (val, "digits-mlp/l2t-dln", "first differing step 3 (seeds 0;")
    final = copy.deepcopy(reference)
    final["entries"]["random-cifar10-resnet8/fixed"]["seeds"]["0"]["params"] = "f" * 16
    cases["final params"] = (final, "random-cifar10-resnet8/fixed", "final parameters, phi or metrics differ (seeds 0)")
    agent = copy.deepcopy(reference)
    agent["entries"]["digits-mlp/sac"]["agent"] = "e" * 16
    cases["agent"] = (agent, "digits-mlp/sac", "the trained agent's policy differs")

    for what, (other, entry, expected) in cases.items():
        other_file = tmp_path / "other.json"
        other_file.write_text(json.dumps(other))
        done = _run("--compare", str(ref_file), str(other_file))
        assert done.returncode == 1, (what, done.stdout, done.stderr)
        verdicts = _lines(done.stdout)
        assert set(verdicts) == set(reference["entries"]), what
        assert verdicts[entry].startswith("DIFFERS: ") and expected in verdicts[entry], (what, verdicts[entry])
        assert all(v == "equal" for name, v in verdicts.items() if name != entry), what

    same = _run("--compare", str(ref_file), str(REFERENCE))
    assert same.returncode == 0 and set(_lines(same.stdout).values()) == {"equal"}


def test_comparison_refuses_another_spec():
    fp = _fingerprint_module()
    reference = json.loads(REFERENCE.read_text())
    other = copy.deepcopy(reference)
    other["spec"]["seeds"] = [0]
    said: list[str] = []
    assert fp.compare(reference, other, out=said.append) is False
    assert said == ["the two fingerprints ran different specs; nothing is comparable"]


def test_digest_sees_every_bit_and_the_shape():
    fp = _fingerprint_module()
    x = torch.linspace(-1, 1, 12)
    y = x.clone()
    y.view(torch.int32)[7] ^= 1  # the last bit of one float
    assert fp.digest([x]) != fp.digest([y])
    assert fp.digest([x]) != fp.digest([x.view(3, 4)])
    assert fp.digest([x]) == fp.digest([x.clone()])


def test_this_machine_reproduces_the_committed_fingerprint(tmp_path):
    """``--check`` on a subset: against a perturbed copy it fails and names hypergrad at step 5;
    the same runs, saved, equal the committed reference entry for entry."""
    reference = json.loads(REFERENCE.read_text())
    made = reference["numerics"]
    here = {"torch": torch.__version__, "numpy": np.__version__, "machine": platform.machine()}
    if any(made[k] != v for k, v in here.items()):
        pytest.skip(f"the fingerprint was made with {[made[k] for k in here]}, this is {list(here.values())}: "
                    "pinned numerics promise equal bits only for the same versions and architecture")
    bad = tmp_path / "perturbed.json"
    bad.write_text(json.dumps(_perturbed(reference)))
    saved = tmp_path / "here.json"
    done = _run("--check", "--file", str(bad), "--only", *SUBSET, "--save", str(saved))
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    verdicts = _lines(done.stdout)
    assert set(verdicts) == set(SUBSET)
    assert verdicts["digits-mlp/hypergrad"].startswith("DIFFERS: first differing step 5 (seeds 1;")

    again = _run("--compare", str(REFERENCE), str(saved), "--only", *SUBSET)
    assert again.returncode == 0, again.stdout
    assert _lines(again.stdout) == {name: "equal" for name in SUBSET}
    assert json.loads(saved.read_text())["numerics"]["pinned"] is True
