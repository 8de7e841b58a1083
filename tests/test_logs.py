"""Library progress bars and known library warnings are hidden from a command's stderr unless --verbose."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

from animatch.logs import KNOWN_WARNINGS, QUIET_ENVIRONMENT, quiet_libraries


def _init_model(tmp_path, *extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in QUIET_ENVIRONMENT}  # a fresh user's environment
    result = subprocess.run([sys.executable, "-m", "animatch.cli", "init-model", "clip-tiny", "--out",
                             str(tmp_path / f"clip{len(extra)}"), *extra], capture_output=True, text=True,
                            env={**env, "HF_HUB_OFFLINE": "1"}, timeout=120, check=True)
    return result.stderr


def test_command_stderr_has_no_library_bars_unless_verbose(tmp_path):
    assert _init_model(tmp_path) == ""
    assert "Writing model shards" in _init_model(tmp_path, "--verbose")


def test_known_library_warnings_are_filtered_and_others_kept(monkeypatch):
    for name in QUIET_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)  # restored after the test
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries()
        for category, message in KNOWN_WARNINGS:
            warnings.warn(message.replace("\\", "") + " and will be removed", category, stacklevel=1)
        warnings.warn("some other library change", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["some other library change"]
    assert all(os.environ[name] == value for name, value in QUIET_ENVIRONMENT.items())
