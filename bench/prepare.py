"""Throughput of `animatch prepare`: images validated per second, end to end.

Usage: .venv/bin/python bench/prepare.py [--data ROOT] [--n 3000] [--image-size 128] [--workers N]
Without --data, draws --n synthetic characters (`animatch synth`, seed 0) into a temp dir first (not
timed). Then times one full `prepare` run (schema and text checks, every image read, hashed and fully
decoded in a process pool, dedup, chunking, split, writing the outputs) and prints records, seconds and
images/s.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from animatch.config import PrepareConfig, SynthConfig
from animatch.data.prepare import run_prepare
from animatch.data.synth import run_synth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dataset root to prepare (default: draw a synthetic one)")
    parser.add_argument("--n", type=int, default=3000, help="synthetic characters to draw without --data")
    parser.add_argument("--image-size", type=int, default=128, help="synthetic image width in pixels")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="image-checking processes (default: one per core; 0: the main process)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        data = args.data
        if data is None:
            data = str(Path(tmp) / "synth")
            run_synth(SynthConfig(out=data, n=args.n, seed=0, image_size=args.image_size))
        out = Path(tmp) / "prepared"
        start = time.perf_counter()
        run_prepare(PrepareConfig(data=data, out=str(out), workers=args.workers))
        seconds = time.perf_counter() - start
        report = json.loads((out / "prepare_report.json").read_text())
    images = report["images_checked"]
    workers = args.workers or os.cpu_count()
    print(f"bench prepare: {report['records_read']} records, {images} images checked, {report['kept']} kept, "
          f"{seconds:.2f} s -> {images / seconds:.0f} images/s ({workers} workers, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
