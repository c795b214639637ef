"""l2t_bench.allocator: applied on Linux with glibc, off with L2T_MALLOC_TUNING=0, harmless elsewhere."""

import platform
import sys

import pytest

from l2t_bench.allocator import keep_large_blocks


def test_turned_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("L2T_MALLOC_TUNING", "0")
    assert keep_large_blocks() is False


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="needs Linux with glibc")
def test_applied_with_glibc(monkeypatch):
    monkeypatch.delenv("L2T_MALLOC_TUNING", raising=False)
    assert keep_large_blocks() is True
