"""What the bench scripts share: running an `animatch` subcommand in-process, timed, stopping on failure."""

from __future__ import annotations

import time

from animatch.cli import main as animatch


def run(*args: object) -> float:
    """Run `animatch ARGS...`; returns its wall seconds, exits with a message if it fails."""
    start = time.perf_counter()
    code = animatch([str(a) for a in args])
    if code:
        raise SystemExit(f"animatch {args[0]} failed with exit code {code}")
    return time.perf_counter() - start
