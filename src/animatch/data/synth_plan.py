"""The plan of a synthetic persona dataset: every character's title, name, attributes, uuid-like file name,
appearance and personality text, decided in one seeded pass (`plan_records`), so a dataset depends only on the
seed and n, never on the number of drawing processes. Attribute combinations are unique per character while the
vocabulary allows, so a model that reads the drawn attributes can tell characters apart. Library code (the
offline tokenizers' vocabulary) reads plans from here; `animatch synth` (data/synth.py) draws and writes them.
"""

from __future__ import annotations

import math
import random
import uuid
from pathlib import Path

from animatch.data.synth_text import ATTRIBUTES, DESCRIBED, describe, describe_personality
from animatch.errors import UserError

IMAGES_PER_FOLDER = 500
N_COMBINATIONS = math.prod(len(ATTRIBUTES[name]) for name in DESCRIBED)
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
