"""`animatch synth`: a synthetic persona dataset in exactly the AniPersonaCaps layout, drawn offline.

`plan_records` decides everything about every character in one seeded pass (title, name, attributes,
uuid-like file name, appearance and personality text), so the output depends only on the seed and n, never
on the number of worker processes. Attribute combinations are unique per character (while the vocabulary
allows), so a model that reads the drawn attributes can tell characters apart. `run_synth` draws the
images in a process pool (`synth_draw`), writes ROOT/metadata.jsonl plus a report, and swaps the finished
root into place atomically. Records carry an extra field "attributes" describing what is drawn.
"""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from animatch.config import SynthConfig
from animatch.data.synth_draw import draw_character
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
from animatch.errors import UserError
from animatch.runs import atomic_dir, claim_output, markdown_table, write_run_files

__all__ = ["ATTRIBUTES", "DESCRIBED", "Sentence", "appearance_sentences", "attribute_phrase", "describe",
           "describe_personality", "draw_character", "draw_seed", "plan_records", "query_text", "run_synth"]

IMAGES_PER_FOLDER = 500
N_COMBINATIONS = math.prod(len(ATTRIBUTES[name]) for name in DESCRIBED)
CHUNK = 32
SYLLABLES = ["a", "ka", "ki", "ko", "sa", "shi", "su", "ta", "chi", "tsu", "na", "ni", "no", "ha", "hi", "mi",
             "ma", "mo", "ya", "yu", "ra", "ri", "ru", "re", "ro", "wa", "ze", "ga", "do", "be", "ku", "to"]
TITLE_WORDS = (["Magical", "Starlight", "Crimson", "Eternal", "Silent", "Lost", "Brave", "Hidden", "Shining",
                "Twilight", "Frozen", "Moonlit", "Infinite", "Sacred", "Wandering", "Clockwork", "Azure"],
               ["Academy", "Chronicle", "Kingdom", "Festival", "Journey", "Garden", "Blade", "Melody",
                "Frontier", "Library", "Cafe", "Witches", "Knights", "Detectives", "Idols", "Railway"])
TITLE_PATTERNS = ["{a} {b}", "{a} {b}: {c} Arc", "The {a} {b}", "{b} of the {a} {c}", "{a} {b} {r}",
                  "{r} no {b}"]


def _word(rng: random.Random, k: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(k)).capitalize()


def _title(rng: random.Random) -> str:
    a, b = TITLE_WORDS
    return rng.choice(TITLE_PATTERNS).format(a=rng.choice(a), b=rng.choice(b), c=rng.choice(b),
                                             r=_word(rng, rng.randint(2, 3)))


def _unique(make, taken: set) -> str:
    for _ in range(1000):
        value = make()
        if value not in taken:
            taken.add(value)
            return value
    raise RuntimeError("name space exhausted")


def draw_seed(file_name: str) -> int:
    """The drawing seed of a record, from its uuid: lets anyone redraw a record's image from the record."""
    return int(Path(file_name).stem.replace("-", "")[:12], 16)


def _sample_attributes(rng: random.Random, background: str, taken: set) -> dict:
    for _ in range(100):
        attrs = {name: rng.choice(ATTRIBUTES[name]) for name in DESCRIBED}
        key = tuple(attrs.values())
        if key not in taken or len(taken) > N_COMBINATIONS // 2:  # unique while the vocabulary allows
            taken.add(key)
            return {**attrs, "background": background}
    raise RuntimeError("attribute combinations exhausted")


def plan_records(n: int, seed: int = 0, characters_per_title: int = 12) -> list[dict]:
    """All records of a synthetic dataset (no images), grouped by title, deterministic for (n, seed)."""
    if n < 1 or characters_per_title < 1:
        raise UserError("--n and --characters-per-title must be at least 1")
    rng = random.Random(seed)
    n_titles = max(1, round(n / characters_per_title))
    title_of = sorted(list(range(min(n_titles, n))) + [rng.randrange(n_titles) for _ in range(n - n_titles)])
    taken_titles: set = set()
    titles = [_unique(lambda: _title(rng), taken_titles) for _ in range(n_titles)]
    backgrounds = [rng.choice(ATTRIBUTES["background"]) for _ in range(n_titles)]
    taken_names: set = set()
    taken_combos: set = set()
    records = []
    for i, t in enumerate(title_of):
        pronoun = "she" if rng.random() < 0.6 else "he"
        name = _unique(lambda: _word(rng, rng.randint(2, 3)) + (f" {_word(rng, rng.randint(2, 3))}"
                                                                  if rng.random() < 0.8 else ""), taken_names)
        attrs = _sample_attributes(rng, backgrounds[t], taken_combos)
        uid = uuid.UUID(bytes=rng.randbytes(16), version=4)
        slug = "".join(ch for ch in titles[t].lower() if ch.isalnum())[:24]
        records.append({
            "file_name": f"images/images_{i // IMAGES_PER_FOLDER}/{uid}.png",
            "title": titles[t],
            "character": name,
            "appearance": describe(attrs, rng, name, pronoun),
            "personality": describe_personality(rng, name, pronoun),
            "url": f"https://{slug}.fandom.com/wiki/{name.replace(' ', '_')}",
            "attributes": attrs,
        })
    return records


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
