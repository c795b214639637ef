"""Shared test fixtures: each test leaves the global random generators as it found them."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _global_rngs_untouched():
    """A test that seeds or draws from torch's, numpy's or Python's global generator (a student
    with dropout must) leaves them as they were, so no result depends on test order."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        yield
    np.random.set_state(np_state)
    random.setstate(py_state)

