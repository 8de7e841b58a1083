"""Training examples of the LLaVA judge, built with the very prompts and tokens `animatch judge` uses.

Any dataset is read the same way: appearance texts and their sentences, never a generator's attributes or
wording. Per epoch (`plan_epoch`, seeded by (seed, epoch), so any number of workers sees the same set):
- `description_examples` stage-1 examples per character (a fraction: one with that probability; fewer leaves
  more of each step to stage 2): image -> `description_target`, the appearance with
  the character's name replaced by "the character" (a name is not visible, and left in it lets teacher forcing
  recall a training character's looks from its name instead of from the image), as text chunks or, with
  `description_style: keywords`, as its appearance keywords in description order, shades as basic colours
  (`evaluate.keywords.canonical_keywords`: "blue hair, gold eyes, fair skin, black kimono, glasses"): a fixed
  order makes each place in the answer one question about the image, and a basic colour is what an image shows
  (which of "azure" or "cobalt" a text chose, it cannot);
- one stage-2 positive and `negatives_per_positive` negatives in the TWO-stage format: the stage-1 turn answered
  with a description of this character, then the relevance question about a candidate text, answered
  `Score: N\\nAnalysis: ...` (`relevance_answer`). The context is the model's own description (`own`, written
  by `judge.train` after `describe_steps` or at `own_context_from`, as at inference) or one made from the
  appearance (a keyword one with a describer's errors at rate `context_noise`, since stage 2 reads imperfect
  descriptions at inference). A text context could copy the positive's candidate word for word, so then the
  candidate is 1-3 of the character's sentences left out of the context (a negative's context loses as many,
  so length tells nothing); otherwise the candidate is the character's sentences from one in the first half on.
  A negative's candidate is another character's text made the same way, from the same title with probability
  `same_title_negatives`.
  Candidates keep their names and contexts have none, so names carry no signal;
- personality texts are used only as extra negatives: with probability `personality_negatives` a stage-2
  example whose candidate is the character's own personality, scored 1 (it does not describe the looks).
With `context_loss`, a stage-2 context that is exactly the record's description target (reference keywords,
no errors) is trained as stage 1's answer too. The plan draws only which examples there are; each is written
out (`_Planner.write`) when used.
Encoding an example into ids and labels is `judge.examples`' job.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from typing import Any

from animatch.config import JudgeTrainConfig
from animatch.evaluate.keywords import canonical_keywords, extract_keywords, keyword_group
from animatch.judge import prompts

PERSONALITY_SCORE = 1
MAX_CANDIDATE_SENTENCES = 3
NEUTRAL_NAME = "the character"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def token_ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def join_within(tokenizer: Any, pieces: list[str], budget: int) -> str:
    """`pieces` joined by spaces while their token counts add up to at most `budget`; the first piece is cut
    to the budget when it alone is longer."""
    kept, used = [], 0
    for piece in pieces:
        n = len(token_ids(tokenizer, piece))
        if used + n > budget:
            break
        kept.append(piece)
        used += n
    if kept or not pieces:
        return " ".join(kept)
    return tokenizer.decode(token_ids(tokenizer, pieces[0])[:budget], skip_special_tokens=True).strip()


def description_keywords(record: dict) -> list[str]:
    """The record's appearance keywords as a keyword description names them (`canonical_keywords`)."""
    return canonical_keywords(extract_keywords(anonymise(record["appearance"], record["character"])))


def description_target(record: dict, tokenizer: Any, budget: int, style: str = "text",
                       keywords: list[str] | None = None) -> str:
    """The stage-1 answer of a record, name anonymised, within `budget` tokens: its appearance chunks joined
    (style "text"), or its `description_keywords` (or the `keywords` given) joined by commas (style "keywords";
    the text when there are none)."""
    if style == "keywords":
        keywords = description_keywords(record) if keywords is None else keywords
        if keywords:
            return join_within(tokenizer, [k + "," for k in keywords], budget).rstrip(",")
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


def relevance_answer(score: int, anchor: dict, text: str, positive: bool) -> str:
    """`Score: N\\nAnalysis: ...` about candidate `text` judged against record `anchor`: the analysis names the
    text's appearance keywords (`extract_keywords`) that the anchor's appearance has (positive) or lacks
    (negative)."""
    reference = set(extract_keywords(anchor["appearance"]))
    keywords = [k for k in extract_keywords(text) if (k in reference) == positive]
    listed = ", ".join(keywords[:4])
    if positive:
        analysis = "The text matches the character" + (f": {listed}." if listed else ".")
    else:
        analysis = "The text describes someone else" + (f": {listed} do not match." if listed else ".")
    return prompts.format_relevance_answer(score, analysis)


class _Planner:
    """What the stage-2 texts of an epoch are drawn from (see the module docstring); every draw takes the rng
    of its example, so any example can be written on its own, in any order."""

    def __init__(self, records: list[dict], cfg: JudgeTrainConfig, tokenizer: Any, own: dict[int, str] | None,
                 noise: float):
        self.records, self.cfg, self.tokenizer, self.own, self.noise = records, cfg, tokenizer, own, noise
        self.members = sorted(own) if own is not None else list(range(len(records)))
        self.by_title: dict[str, list[int]] = defaultdict(list)
        for i in self.members:
            self.by_title[records[i]["title"]].append(i)
        self.sentences = [split_sentences(r["appearance"]) for r in records]
        self.swap_sources: dict[int, list[str]] = {}  # description_keywords of characters drawn for swaps
        # A text context could copy a positive's candidate word for word; keywords or own descriptions cannot.
        self.split_positives = own is None and cfg.description_style == "text"

    def dropped(self, i: int, rng: random.Random) -> list[int]:
        """Indices of 1-3 sentences of record i, never all of them (none unless `split_positives`)."""
        n = len(self.sentences[i])
        if not self.split_positives or n < 2:
            return []
        k = rng.randint(1, min(MAX_CANDIDATE_SENTENCES, n - 1))
        start = rng.randint(0, n - k)
        return list(range(start, start + k))

    def candidate(self, j: int, rng: random.Random, taken: list[int] | None = None) -> str:
        """A text about record j: its sentences `taken`, else (no `split_positives`) its sentences from one in
        the first half on, else 1-3 drawn sentences; cut to whole sentences within `candidate_tokens`."""
        sentences = self.sentences[j]
        if not taken and not self.split_positives:
            taken = list(range(rng.randrange(len(sentences) // 2 + 1), len(sentences)))
        taken = taken if taken is not None else self.dropped(j, rng) or list(range(len(sentences)))
        return join_within(self.tokenizer, [sentences[t] for t in taken], self.cfg.candidate_tokens)

    def context(self, i: int, dropped: list[int], rng: random.Random) -> str:
        """Record i's description for the stage-2 context: the model's own, else the description target (as
        stage 1 is trained to write it) of its appearance without the `dropped` sentences, keywords
        `misdescribed` (when the plan is `noisy`)."""
        if self.own is not None:
            return self.own[i]
        record = self.records[i]
        if dropped:
            kept = [s for t, s in enumerate(self.sentences[i]) if t not in dropped]
            record = {**record, "appearance": " ".join(kept), "appearance_chunks": kept}
        keywords = None
        if self.noise:
            keywords = self.misdescribed(description_keywords(record), rng)
        return description_target(record, self.tokenizer, self.cfg.description_tokens, self.cfg.description_style,
                                  keywords)

    def misdescribed(self, keywords: list[str], rng: random.Random) -> list[str]:
        """`keywords` with the errors of a describer: each, with probability `noise`, left out or (half
        the time) replaced by a keyword of the same group (`keyword_group`) from another character's description
        ("blue hair" -> "red hair"). Stage 2 then learns to judge a description that is partly wrong, as its
        own are at inference, instead of taking one missing keyword for a mismatch."""
        kept: list[str] = []
        for keyword in keywords:
            if rng.random() >= self.noise:
                kept.append(keyword)
            elif rng.random() < 0.5:
                group = keyword_group(keyword)
                j = rng.choice(self.members)
                if j not in self.swap_sources:  # extraction is the loader's cost; a drawn character comes again
                    self.swap_sources[j] = description_keywords(self.records[j])
                other = self.swap_sources[j]
                swaps = [k for k in other if keyword_group(k) == group and k not in keywords and k not in kept]
                kept += [rng.choice(swaps)] if swaps else []
        return kept

    def negative_of(self, i: int, rng: random.Random) -> int | None:
        same = [j for j in self.by_title[self.records[i]["title"]] if j != i]
        if same and rng.random() < self.cfg.same_title_negatives:
            return rng.choice(same)
        if len(self.members) < 2:
            return None
        while True:
            j = rng.choice(self.members)
            if j != i:
                return j

    def write(self, slot: dict) -> dict:
        """The written example of a planned slot (see `plan_epoch`)."""
        i, kind, cfg = slot["record"], slot["kind"], self.cfg
        rng = random.Random(slot["seed"])
        if kind == "description":
            answer = description_target(self.records[i], self.tokenizer, cfg.description_tokens,
                                        cfg.description_style)
            return {"record": i, "kind": kind, "other": None, "description": None, "text": None, "answer": answer,
                    "describes": False}
        taken = self.dropped(i, rng)
        if kind == "positive":
            text = self.candidate(i, rng, taken)
        elif kind == "negative":
            text = self.candidate(slot["other"], rng)  # the context loses sentences as a positive's does
        else:
            text = join_within(self.tokenizer, split_sentences(self.records[i]["personality"]), cfg.candidate_tokens)
        if kind == "personality":
            answer = prompts.format_relevance_answer(PERSONALITY_SCORE, "The text describes personality, not "
                                                                        "appearance.")
        else:
            score = cfg.positive_score if kind == "positive" else cfg.negative_score
            answer = relevance_answer(score, self.records[i], text, kind == "positive")
        # The context is then exactly what a description example of record i answers (`context_loss`).
        describes = cfg.context_loss and self.own is None and not self.noise and not taken
        return {"record": i, "kind": kind, "other": slot.get("other", i if kind == "positive" else None),
                "description": self.context(i, taken, rng), "text": text, "answer": answer,
                "describes": describes}


class EpochPlan:
    """The examples of one epoch in a seeded order: slots {"record", "kind", "other", "seed"} drawn up front
    (cheap), each written out to its texts only when used (`plan[n]`), so a run that uses a few thousand of a
    large dataset's examples does not write them all. `missing`: examples that could not be made, by reason."""

    def __init__(self, slots: list[dict], missing: Counter, planner: _Planner):
        self.slots, self.missing, self.planner = slots, missing, planner

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, n: int) -> dict:
        return self.planner.write(self.slots[n])

    def kinds(self) -> Counter:
        return Counter(slot["kind"] for slot in self.slots)


def plan_epoch(records: list[dict], cfg: JudgeTrainConfig, tokenizer: Any, seed: int, epoch: int,
               own: dict[int, str] | None = None, describe_only: bool = False, noisy: bool = True) -> EpochPlan:
    """The epoch's examples (`EpochPlan`), drawn from (seed, epoch).

    `describe_only`: description examples only. `own`: the model's own descriptions of some records (index ->
    text); then only those records make examples, and their stage-2 context is their own description. `noisy`:
    reference keyword contexts carry `context_noise` (False: exact, as `judge.train` has them before
    `context_noise_from`).
    A written example: {"record": index, "kind": description|positive|negative|personality, "other": index of
    the candidate's character or None, "description": stage-2 context or None, "text": candidate or None,
    "answer": the target answer, "describes": whether the context is exactly the record's description target,
    so that it carries the stage-1 loss too (`context_loss`)}.
    """
    rng = random.Random(f"{seed}:{epoch}")
    planner = _Planner(records, cfg, tokenizer, own, cfg.context_noise if noisy else 0.0)
    slots: list[dict] = []
    missing: Counter = Counter()
    judged = set(planner.members) if not describe_only else set()
    whole, part = divmod(cfg.description_examples, 1)
    for i, record in enumerate(records):
        if own is not None and i not in judged:  # the stage-2 epochs keep describing the same characters
            continue
        slots += [{"record": i, "kind": "description"}
                  for _ in range(int(whole) + (part > 0 and rng.random() < part))]
        if i not in judged:
            continue
        if not planner.split_positives or len(planner.sentences[i]) >= 2:
            slots.append({"record": i, "kind": "positive"})
        else:
            missing["positive: appearance of one sentence"] += 1
        for _ in range(cfg.negatives_per_positive):
            j = planner.negative_of(i, rng)
            if j is None:
                missing["negative: no other character"] += 1
            else:
                slots.append({"record": i, "kind": "negative", "other": j})
        if record.get("personality", "").strip() and rng.random() < cfg.personality_negatives:
            slots.append({"record": i, "kind": "personality"})
    rng.shuffle(slots)
    for n, slot in enumerate(slots):
        slot["seed"] = f"{seed}:{epoch}:{n}"
    return EpochPlan(slots, missing, planner)
