"""`bench/gpu_check.sh` keeps working where no GPU is: `--help` says what it does, and `--cpu-dry-run` runs every
benchmark of its table with tiny shapes on the CPU (the 7B judge only on the meta device)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _script(*args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_help_says_what_it_does():
    result = _script("--help", timeout=30)
    assert result.returncode == 0
    for what in ("--cpu-dry-run", "gpu_wheels.sh", "samples/s", "pairs/s", "steps/s", "8 minutes"):
        assert what in result.stdout
    assert _script("--no-such-option", timeout=30).returncode == 2


@pytest.mark.slow
def test_cpu_dry_run_prints_the_whole_table(tmp_path):
    result = _script("--cpu-dry-run", "--no-suite", "--out", str(tmp_path / "work"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")][1:]  # rows under the header
    rows = [line.split(" | ")[0].removeprefix("| ") for line in table]
    assert sum(r.startswith("train ") for r in rows) == 3 and any("--deterministic" in r for r in rows)
    assert any(r.startswith("drift") for r in rows) and any(r.startswith("embed") for r in rows)
    assert any(r.startswith("match") for r in rows) and any(r.startswith("judge-train") for r in rows)
    judge = [r for r in rows if r.startswith("judge llava-tiny (7B shape: 7.1B on meta)")]
    assert len(judge) == 3 and judge[-1].endswith("--static-cache (compiled decode)")
    assert "CPU dry run" in result.stdout
