"""Training examples of the LLaVA judge, built with the very prompts and tokens `animatch judge` uses.

Per character and epoch (`plan_epoch`, seeded by (seed, epoch), so any number of workers sees the same set):
- `description_examples` stage-1 examples: image -> the reference appearance, its chunks joined up to
  `description_tokens` tokens, the character's name replaced by "the character" (`description_target`): a
  name is not visible, and left in it lets teacher forcing recall a training character's looks from its name
  instead of from the image (on llava-tiny the training characters' loss then fell well below unseen ones');
- one stage-2 positive and `negatives_per_positive` negatives in the TWO-stage format: the context is the
  stage-1 turn answered with a description of this character (as stage 1 is trained to write it), then the relevance
  question about a candidate text, answered `Score: N\\nAnalysis: ...` (`relevance_answer`). A positive's
  candidate is never a verbatim copy of the context (the model would learn copy detection): with synthetic
  `attributes` it is a fresh rendering of them (`synth_text.describe`, other words and order), else 1-3 of
  the character's appearance sentences, which are then left out of the context; a negative's context drops
  as many sentences, so context length tells nothing. A negative's candidate is another character's text made
  the same way, from the same title with probability `same_title_negatives`. Candidates keep their names and
  the context has none, so names carry no signal;
- personality texts are used only as extra negatives: with probability `personality_negatives` a stage-2
  example whose candidate is the character's own personality, scored 1 (it does not describe the looks).
`ExampleEncoder` turns a planned example into ids exactly as the judge builds its inputs: the processor on the
image and the stage-1 prompt (image tokens expanded), then for stage 2 the context description's ids and
`prompts.tail_token_ids` of the relevance turn, then the answer and the end-of-sequence token. Labels are -100
everywhere except the answer and its end token: no prompt, image or padding token carries loss.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from animatch.config import JudgeTrainConfig
from animatch.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from animatch.data.safepath import path_inside
from animatch.data.synth_text import DESCRIBED, describe
from animatch.errors import UserError
from animatch.evaluate.text import extract_keywords
from animatch.judge import prompts

IGNORE_INDEX = -100
PERSONALITY_SCORE = 1
MAX_CANDIDATE_SENTENCES = 3
MAX_SUBSTITUTES = 16
NEUTRAL_NAME = "the character"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def join_within(tokenizer: Any, pieces: list[str], budget: int) -> str:
    """`pieces` joined by spaces while their token counts add up to at most `budget`; the first piece is cut
    to the budget when it alone is longer."""
    kept, used = [], 0
    for piece in pieces:
        n = len(_ids(tokenizer, piece))
        if used + n > budget:
            break
        kept.append(piece)
        used += n
    if kept or not pieces:
        return " ".join(kept)
    return tokenizer.decode(_ids(tokenizer, pieces[0])[:budget], skip_special_tokens=True).strip()


def description_target(record: dict, tokenizer: Any, budget: int) -> str:
    """The stage-1 answer of a record: its appearance chunks joined up to `budget` tokens, name anonymised."""
    text = join_within(tokenizer, record.get("appearance_chunks") or [record["appearance"]], budget)
    return anonymise(text, record["character"])


def anonymise(text: str, name: str) -> str:
    """`text` with the character's full name, then each of its name words, replaced by "the character"
    ("The character" at a sentence start)."""
    def whole(word: str) -> str:
        return rf"(?<!\w){re.escape(word)}(?!\w)"

    for word in [name] + [w for w in name.split() if len(w) >= 3]:
        text = re.sub(whole(word), lambda _: NEUTRAL_NAME, text)
    return re.sub(rf"(^|[.!?]\s+){NEUTRAL_NAME}", lambda m: m.group(1) + NEUTRAL_NAME.capitalize(), text)


def _pronoun(text: str) -> str:
    words = re.findall(r"[a-z]+", text.lower())
    return "she" if sum(w in ("she", "her", "hers") for w in words) >= sum(w in ("he", "his", "him")
                                                                           for w in words) else "he"


def _has_attributes(record: dict) -> bool:
    return isinstance(record.get("attributes"), dict) and all(k in record["attributes"] for k in DESCRIBED)


def _attribute_phrases(attributes: dict) -> dict[str, str]:
    """Canonical words of the attributes a text always states (hair, eyes, outfit)."""
    return {"hair_color": f"{attributes['hair_color']} hair", "hair_style": attributes["hair_style"],
            "eye_color": f"{attributes['eye_color']} eyes",
            "outfit": f"{attributes['outfit_color']} {attributes['outfit']}"}


def relevance_answer(score: int, candidate: dict, anchor: dict, text: str, positive: bool) -> str:
    """`Score: N\\nAnalysis: ...` about `text`, written about record `candidate`, judged against record
    `anchor`: the analysis names what matches (positive) or what does not (negative), from the synthetic
    attributes when both records have them, else from the appearance keywords (`extract_keywords`)."""
    if _has_attributes(candidate) and _has_attributes(anchor):
        said, truth = _attribute_phrases(candidate["attributes"]), _attribute_phrases(anchor["attributes"])
        keywords = [said[k] for k in said if (said[k] == truth[k]) == positive]
    else:
        reference = set(extract_keywords(anchor["appearance"]))
        keywords = [k for k in extract_keywords(text) if (k in reference) == positive]
    listed = ", ".join(keywords[:4])
    if positive:
        analysis = "The text matches the character" + (f": {listed}." if listed else ".")
    else:
        analysis = "The text describes someone else" + (f": {listed} do not match." if listed else ".")
    return prompts.format_relevance_answer(score, analysis)


class _Planner:
    """Draws the stage-2 texts of one epoch (see the module docstring)."""

    def __init__(self, records: list[dict], cfg: JudgeTrainConfig, tokenizer: Any, rng: random.Random):
        self.records, self.cfg, self.tokenizer, self.rng = records, cfg, tokenizer, rng
        self.by_title: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(records):
            self.by_title[r["title"]].append(i)
        self.sentences = [split_sentences(r["appearance"]) for r in records]

    def dropped(self, i: int) -> list[int]:
        """Indices of 1-3 sentences of record i (never all of them; none for synthetic records)."""
        n = len(self.sentences[i])
        if _has_attributes(self.records[i]) or n < 2:
            return []
        k = self.rng.randint(1, min(MAX_CANDIDATE_SENTENCES, n - 1))
        start = self.rng.randint(0, n - k)
        return list(range(start, start + k))

    def candidate(self, j: int, taken: list[int] | None = None) -> str:
        """A text about record j: a rendering of its attributes, else its sentences `taken` (or 1-3 drawn)."""
        record = self.records[j]
        if _has_attributes(record):
            text = describe(record["attributes"], self.rng, record["character"], _pronoun(record["appearance"]))
            pieces = split_sentences(text)
        else:
            taken = taken if taken is not None else self.dropped(j) or list(range(len(self.sentences[j])))
            pieces = [self.sentences[j][t] for t in taken]
        return join_within(self.tokenizer, pieces, self.cfg.candidate_tokens)

    def context(self, i: int, dropped: list[int]) -> str:
        """Record i's description for the stage-2 context (as stage 1 is trained to write it), without the
        `dropped` sentences."""
        record = self.records[i]
        if _has_attributes(record) or not dropped:
            return description_target(record, self.tokenizer, self.cfg.description_tokens)
        kept = [s for t, s in enumerate(self.sentences[i]) if t not in dropped]
        return anonymise(join_within(self.tokenizer, kept, self.cfg.description_tokens), record["character"])

    def negative_of(self, i: int) -> int | None:
        same = [j for j in self.by_title[self.records[i]["title"]] if j != i]
        if same and self.rng.random() < self.cfg.same_title_negatives:
            return self.rng.choice(same)
        if len(self.records) < 2:
            return None
        j = self.rng.randrange(len(self.records) - 1)
        return j + (j >= i)


def plan_epoch(records: list[dict], cfg: JudgeTrainConfig, tokenizer: Any, seed: int,
               epoch: int) -> tuple[list[dict], Counter]:
    """(the epoch's example specs in a seeded order, counts of examples that could not be made, by reason).

    A spec: {"record": index, "kind": description|positive|negative|personality, "description": stage-2
    context or None, "text": candidate or None, "answer": the target answer}.
    """
    rng = random.Random(f"{seed}:{epoch}")
    planner = _Planner(records, cfg, tokenizer, rng)
    plan: list[dict] = []
    missing: Counter = Counter()

    def relevance(i: int, j: int, kind: str, context: str, text: str, score: int) -> None:
        answer = (relevance_answer(score, records[j], records[i], text, kind == "positive")
                  if kind != "personality" else
                  prompts.format_relevance_answer(score, "The text describes personality, not appearance."))
        plan.append({"record": i, "kind": kind, "description": context, "text": text, "answer": answer})

    for i, record in enumerate(records):
        target = description_target(record, tokenizer, cfg.description_tokens)
        plan += [{"record": i, "kind": "description", "description": None, "text": None, "answer": target}
                 for _ in range(cfg.description_examples)]
        taken = planner.dropped(i)
        if _has_attributes(record) or taken:
            relevance(i, i, "positive", planner.context(i, taken), planner.candidate(i, taken),
                      cfg.positive_score)
        else:
            missing["positive: appearance of one sentence"] += 1
        for _ in range(cfg.negatives_per_positive):
            j = planner.negative_of(i)
            if j is None:
                missing["negative: no other character"] += 1
                continue
            context = planner.context(i, planner.dropped(i))
            relevance(i, j, "negative", context, planner.candidate(j), cfg.negative_score)
        if record.get("personality", "").strip() and rng.random() < cfg.personality_negatives:
            text = join_within(tokenizer, split_sentences(record["personality"]), cfg.candidate_tokens)
            relevance(i, i, "personality", planner.context(i, planner.dropped(i)), text, PERSONALITY_SCORE)
    rng.shuffle(plan)
    return plan, missing


class ExampleEncoder:
    """Token ids and labels of planned examples, built from the same pieces the judge feeds the model."""

    def __init__(self, processor: Any):
        self.processor, self.tokenizer = processor, processor.tokenizer
        self.stage1_prompt = prompts.render_description_prompt(processor)
        self.eos = self.tokenizer.eos_token_id
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(processor.image_token)

    def prompt_ids(self, image: Image.Image, spec: dict) -> tuple[list[int], torch.Tensor]:
        """(the ids the model sees before the answer, pixel values) of an example."""
        batch = self.processor(images=image, text=self.stage1_prompt, return_tensors="pt")
        ids = batch["input_ids"][0].tolist()
        if spec["kind"] != "description":
            tail = prompts.relevance_tail(self.processor, spec["text"])
            ids += _ids(self.tokenizer, spec["description"]) + prompts.tail_token_ids(self.tokenizer, tail)
        return ids, batch["pixel_values"][0]

    def encode(self, image: Image.Image, spec: dict) -> dict:
        """{"input_ids", "labels", "pixel_values"}: labels -100 on everything but the answer + end token."""
        prompt, pixel_values = self.prompt_ids(image, spec)
        answer = _ids(self.tokenizer, spec["answer"]) + [self.eos]
        labels = [IGNORE_INDEX] * len(prompt) + answer
        input_ids = prompt + answer
        labels = [IGNORE_INDEX if t == self.image_token_id else label for t, label in zip(input_ids, labels)]
        return {"input_ids": torch.tensor(input_ids), "labels": torch.tensor(labels), "pixel_values": pixel_values}


class JudgeExampleDataset(torch.utils.data.Dataset):
    """Item i of the current epoch's plan, encoded. When its image fails to load or it is longer than
    `max_length`, the next items are tried instead (up to MAX_SUBSTITUTES), so a batch is never short; the
    failures travel with the item in "skipped" to be counted. Call `set_epoch` before each epoch (it redraws
    the plan)."""

    def __init__(self, records: list[dict], root: str | Path, processor: Any, cfg: JudgeTrainConfig, seed: int,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.records, self.root, self.cfg, self.seed, self.max_pixels = records, Path(root), cfg, seed, max_pixels
        self.encoder = ExampleEncoder(processor)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.plan, self.missing = plan_epoch(self.records, self.cfg, self.encoder.tokenizer, self.seed, epoch)

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> dict:
        skipped = []
        for j in range(i, i + MAX_SUBSTITUTES):
            spec = self.plan[j % len(self.plan)]
            file_name = self.records[spec["record"]]["file_name"]
            try:
                image = load_image(path_inside(self.root, file_name), max_pixels=self.max_pixels)
            except ImageLoadError as e:
                skipped.append((file_name, e.reason))
                continue
            example = self.encoder.encode(image, spec)
            if len(example["input_ids"]) <= self.cfg.max_length:
                return {**example, "kind": spec["kind"], "skipped": skipped}
            skipped.append((file_name, "longer than --max-length"))
        raise UserError(f"{MAX_SUBSTITUTES} examples in a row could not be used (last: {skipped[-1][0]}: "
                        f"{skipped[-1][1]}); check the images and --max-length")


@dataclass
class ExampleCollator:
    """Right-pads a batch: labels -100 and attention 0 on the padding."""
    pad_token_id: int

    def __call__(self, items: list[dict]) -> dict:
        width = max(len(it["input_ids"]) for it in items)
        input_ids = torch.full((len(items), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            input_ids[row, :n], labels[row, :n], attention_mask[row, :n] = it["input_ids"], it["labels"], 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
                "pixel_values": torch.stack([it["pixel_values"] for it in items]), "size": len(items),
                "skipped": [s for it in items for s in it["skipped"]], "kinds": [it["kind"] for it in items]}
