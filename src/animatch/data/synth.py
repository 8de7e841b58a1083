"""`animatch synth`: a synthetic persona dataset in exactly the AniPersonaCaps layout, drawn offline.

`run_synth` takes the plan of every record (`synth_plan.plan_records`: the output depends only on the seed and
n), draws the images in a process pool (`synth_draw`), writes ROOT/metadata.jsonl plus a report, and swaps the
finished root into place atomically. Records carry an extra field "attributes" describing what is drawn.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from animatch.config import SynthConfig
from animatch.data.synth_draw import draw_character
from animatch.data.synth_plan import draw_seed, plan_records
from animatch.data.synth_text import (
    ATTRIBUTES,
    DESCRIBED,
    Sentence,
    appearance_sentences,
    attribute_phrase,
    describe,
    describe_personality,
    query_text,
)
from animatch.runs import atomic_dir, claim_output, markdown_table, write_run_files

__all__ = ["ATTRIBUTES", "DESCRIBED", "Sentence", "appearance_sentences", "attribute_phrase", "describe",
           "describe_personality", "draw_character", "draw_seed", "plan_records", "query_text", "run_synth"]

CHUNK = 32  # images per drawing task


def _draw_chunk(args: tuple) -> int:
    root, size, jobs = args
    for file_name, attrs in jobs:
        path = Path(root) / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        # PIL writes no timestamp chunk, so the same pixels give the same bytes.
        draw_character(attrs, size, draw_seed(file_name)).save(path, format="PNG", compress_level=6)
    return len(jobs)


def run_synth(cfg: SynthConfig) -> int:
    """Write the dataset root `cfg.out`: metadata.jsonl, images/images_<k>/<uuid>.png and a synth report."""
    out = claim_output(cfg, "synth")
    start = time.perf_counter()
    records = plan_records(cfg.n, cfg.seed, cfg.characters_per_title)
    with atomic_dir(out) as tmp:
        chunks = [(str(tmp), cfg.image_size, [(r["file_name"], r["attributes"]) for r in records[i:i + CHUNK]])
                  for i in range(0, len(records), CHUNK)]
        bar = tqdm(total=len(records), desc="drawing", unit="img", disable=len(records) < 200)
        if cfg.workers <= 1 or len(chunks) == 1:
            for chunk in chunks:
                bar.update(_draw_chunk(chunk))
        else:
            with ProcessPoolExecutor(min(cfg.workers, len(chunks))) as pool:
                for done in pool.map(_draw_chunk, chunks):
                    bar.update(done)
        bar.close()
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        (tmp / "metadata.jsonl").write_text(lines, encoding="utf-8")
        seconds = time.perf_counter() - start
        combos = len({tuple(r["attributes"][k] for k in DESCRIBED) for r in records})
        metrics = {"records": len(records), "titles": len({r["title"] for r in records}),
                   "unique_attribute_combinations": combos, "image_size": [cfg.image_size, cfg.image_size * 3 // 2],
                   "seconds": round(seconds, 2),
                   "attribute_counts": {k: dict(sorted(Counter(r["attributes"][k] for r in records).items()))
                                        for k in ATTRIBUTES}}
        rows = [{"attribute": k, "values": len(v), "most common": Counter(r["attributes"][k] for r in records)
                 .most_common(1)[0][0]} for k, v in ATTRIBUTES.items()]
        report = (f"# Synthetic dataset\n\n{len(records)} characters in {metrics['titles']} titles, "
                  f"{combos} distinct described attribute combinations, seed {cfg.seed}, drawn in "
                  f"{seconds:.1f} s.\n\n" + markdown_table(rows) + "\n")
        write_run_files(tmp, cfg, metrics, report, metrics_name="synth_report.json", report_name="synth_report.md")
    print(f"synth: {len(records)} characters, {metrics['titles']} titles -> {out} ({seconds:.1f} s)")
    return 0
