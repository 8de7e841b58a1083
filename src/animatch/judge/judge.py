"""The two-stage judge: `Judge(model=...).analyze(image, text)` and its batched `analyze_batch`.

Stage 1 describes the image (greedy, or beam search with `num_beams`); stage 2 continues the same
conversation with the relevance question and samples `Score: <1-10>` + `Analysis: ...` (temperature 0.3,
top-p 0.9, seeded; temperature 0 is greedy). Stage 2 reuses stage 1's KV cache, cropped after the longest
description: `generate` gets only the ids the cache lacks (the left-padded new turn, after the last
description token when a description filled its budget) and an attention mask over the whole row (prompt +
description + whatever followed its end, hidden, + the new turn), so it never encodes the image again; the
masked positions get no position ids, which keeps every row's positions identical to the same sequence
encoded from scratch (`reuse_prefix=False`, also used under beam search, whose cache does not follow the
returned rows; tests/test_judge_reuse.py holds the two equal). After each stage-2 attempt the cache is
cropped back, so retries reuse it too, without a copy. `static_cache` generates into preallocated caches
(transformers' StaticCache, sized in STATIC_CACHE_STEP steps), whose decode step transformers compiles on a
GPU (CUDA graphs); stage 1's then has room for stage 2, whose retries of some rows re-encode them (a static
cache's rows cannot be selected). When the score cannot be parsed, stage 2 is retried at
`retry_temperatures`; then the result is `status: "unparsed"` with the raw text kept. Bad images, non-English
texts and texts too long for the model's positions become `status: "error"` results; they never stop a batch.
Result keys: description, score, score_expected (the expected score under the model's probabilities of the
score tokens at the score position, `scores`), match_probability (their probability of a match), analysis,
match, status, error, raw, attempts, timings (seconds per pair; in a batch, the batch's time divided among
its pairs).
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import StaticCache

from animatch.config import JudgeConfig
from animatch.data.images import ImageLoadError, load_image
from animatch.judge import prompts
from animatch.judge.language import english_problem
from animatch.judge.loading import load_judge_model
from animatch.judge.parse import parse_analysis, parse_score
from animatch.judge.scores import ScoreTokens, expected_score, match_probability

DEFAULTS = JudgeConfig()  # the keyword defaults of Judge below are the CLI's
# What `Judge.from_options` reads besides the model: the keyword settings of `Judge`.
SETTINGS = ("num_beams", "max_description_tokens", "max_analysis_tokens", "temperature", "top_p", "seed",
            "retry_temperatures", "threshold", "reuse_prefix", "static_cache", "max_image_pixels")
# Static caches are sized in steps of this many tokens, so a compiled decode step meets few cache lengths.
STATIC_CACHE_STEP = 256


@dataclass
class _Described:
    """Stage-1 output of a batch: what stage 2 needs to continue each row."""
    inputs: Any                   # the processor's batch: input_ids, attention_mask, pixel_values
    sequences: torch.Tensor       # [n, prompt + generated] ids
    lengths: list[int]            # description tokens per row (before the first end-of-sequence)
    cache: Any                    # stage 1's KV cache, None under beam search
    cache_rows: list[int]         # the rows the cache holds now (retries narrow it)
    descriptions: list[str]


def error_result(message: str) -> dict:
    """The result of a pair that could not be judged."""
    return {"description": None, "score": None, "score_expected": None, "match_probability": None,
            "analysis": None, "match": None,
            "status": "error", "error": message, "raw": None, "attempts": 0, "timings": {}}


class Judge:
    """Load a LLaVA checkpoint (+ optional adapter) once, then judge (image, text) pairs."""

    def __init__(self, model: str = DEFAULTS.model, adapter: str | None = None, device: str | None = None,
                 dtype: str | None = None, load_in_4bit: bool = False, attn_implementation: str = "sdpa",
                 **settings: Any):
        """Load `model` (+ `adapter`); `settings` are those of `from_model`."""
        loaded = load_judge_model(model, adapter, device=device, dtype=dtype, load_in_4bit=load_in_4bit,
                                  attn_implementation=attn_implementation)
        self._setup(*loaded, **settings)

    @classmethod
    def from_model(cls, model: Any, processor: Any, **settings: Any) -> Judge:
        """A judge around an already loaded model and processor (set up as `loading.load_judge_model` does)."""
        judge = cls.__new__(cls)
        judge._setup(model, processor, **settings)
        return judge

    def _setup(self, model: Any, processor: Any, *, num_beams: int = DEFAULTS.num_beams,
               max_description_tokens: int = DEFAULTS.max_description_tokens,
               max_analysis_tokens: int = DEFAULTS.max_analysis_tokens, temperature: float = DEFAULTS.temperature,
               top_p: float = DEFAULTS.top_p, seed: int = DEFAULTS.seed,
               retry_temperatures: Sequence[float] = tuple(DEFAULTS.retry_temperatures),
               threshold: float = DEFAULTS.threshold, reuse_prefix: bool = DEFAULTS.reuse_prefix,
               static_cache: bool = DEFAULTS.static_cache, max_image_pixels: int = DEFAULTS.max_image_pixels) -> None:
        self.model, self.processor = model, processor
        self.num_beams, self.max_description_tokens = num_beams, max_description_tokens
        self.max_analysis_tokens, self.temperature, self.top_p = max_analysis_tokens, temperature, top_p
        self.seed, self.retry_temperatures = seed, tuple(retry_temperatures)
        self.threshold, self.reuse_prefix, self.max_image_pixels = threshold, reuse_prefix, max_image_pixels
        self.static_cache = static_cache
        forward = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward else "past_key_values"  # transformers renamed it in 5.x
        tokenizer = processor.tokenizer
        eos = model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        self._eos = set(eos) | {tokenizer.eos_token_id} - {None}
        self._pad = tokenizer.pad_token_id
        self._prompt = prompts.render_description_prompt(processor)
        self._scores = ScoreTokens(tokenizer)
        # Stage 2 must fit the language model's positions (an absolute position table has no row past them).
        self._max_positions = getattr(model.config.get_text_config(), "max_position_embeddings", None)
        self._stage1_len = processor(images=[Image.new("RGB", (8, 8))], text=[self._prompt],
                                     return_tensors="pt")["input_ids"].shape[1]

    @classmethod
    def from_options(cls, options: Any, *, prefix: str = "", **overrides: Any) -> Judge:
        """The judge a command's options describe: the one way every command builds one. A command that runs
        the judge beside its own work (audit, serve) names its judge options `judge_<name>`: pass
        `prefix="judge_"`; a name is looked up with the prefix, then without it (device, adapter, seed; never
        the model), and one the command does not have keeps the judge's default. `overrides` win over the
        options (judge-eval's baseline passes model= and adapter=)."""
        def get(name: str) -> Any:
            if name in overrides:
                return overrides[name]
            for key in [prefix + name] + ([name] if prefix and name != "model" else []):
                if hasattr(options, key):
                    return getattr(options, key)
            return getattr(DEFAULTS, name)

        return cls(get("model"), get("adapter"), get("device"), get("dtype"), get("load_in_4bit"),
                   get("attn_implementation"), **{name: get(name) for name in SETTINGS})

    @property
    def device(self) -> torch.device:
        return self.model.device

    def analyze(self, image: str | Path | Image.Image, text: str) -> dict:
        """Judge one pair; see the module docstring for the result."""
        return self.analyze_batch([(image, text)])[0]

    def analyze_batch(self, pairs: Sequence[tuple[str | Path | Image.Image, str]]) -> list[dict]:
        """Judge pairs in one batched generation per stage; failures are per-pair error results."""
        results: list[dict | None] = [None] * len(pairs)
        rows, images, tails = [], [], []
        for i, (image, text) in enumerate(pairs):
            problem = english_problem(text)
            if problem is None:  # the stage-2 turn's ids after the description: counted here, fed to stage 2
                tail = prompts.tail_token_ids(self.processor.tokenizer, prompts.relevance_tail(self.processor, text))
                problem = self._length_problem(tail)
            if problem is not None:
                results[i] = error_result(problem)
                continue
            try:
                images.append(image.convert("RGB") if isinstance(image, Image.Image)
                              else load_image(image, max_pixels=self.max_image_pixels))
            except ImageLoadError as e:
                results[i] = error_result(f"bad image {e.path}: {e.reason}")
                continue
            rows.append(i)
            tails.append(tail)
        if rows:
            for i, result in zip(rows, self._judge(images, tails)):
                results[i] = result
        return results

    def _length_problem(self, tail: list[int]) -> str | None:
        """Why a stage 2 with `tail` after the description does not fit the model's positions, or None when it does."""
        if self._max_positions is None:
            return None
        need = self._stage1_len + self.max_description_tokens + len(tail) + self.max_analysis_tokens
        if need <= self._max_positions:
            return None
        return (f"text too long for this judge: with its prompt, description and answer it needs {need} positions, "
                f"the model has {self._max_positions}; shorten it by {need - self._max_positions} tokens")

    @torch.inference_mode()
    def _judge(self, images: list[Image.Image], tails: list[list[int]]) -> list[dict]:
        """The results of `images`, each judged against the text whose stage-2 tail ids are `tails`."""
        start = time.perf_counter()
        # A static stage-1 cache that stage 2 continues holds stage 2 too: the last description token, the tail
        # and the answer.
        described = self._describe(images, reserve=1 + max(map(len, tails)) + self.max_analysis_tokens
                                   if self.reuse_prefix else 0)
        stage1 = time.perf_counter() - start
        raw: list[str] = [""] * len(tails)
        distributions: list[dict[int, float] | None] = [None] * len(tails)
        attempts = [0] * len(tails)
        todo = list(range(len(tails)))
        for attempt, temperature in enumerate((self.temperature, *self.retry_temperatures)):
            answers = self._relevance(described, tails, todo, temperature, self.seed + attempt)
            for i, (answer, distribution) in zip(todo, answers):
                raw[i], distributions[i], attempts[i] = answer, distribution, attempt + 1
            todo = [i for i in todo if parse_score(raw[i]) is None]
            if not todo:
                break
        stage2 = time.perf_counter() - start - stage1
        n = len(tails)
        timings = {"stage1_s": stage1 / n, "stage2_s": stage2 / n, "total_s": (stage1 + stage2) / n}
        results = []
        for description, answer, distribution, tries in zip(described.descriptions, raw, distributions, attempts):
            score = parse_score(answer)
            results.append({
                "description": description, "score": score, "score_expected": expected_score(distribution),
                "match_probability": match_probability(distribution, self.threshold),
                "analysis": parse_analysis(answer),
                "match": None if score is None else score >= self.threshold,
                "status": "ok" if score is not None else "unparsed", "error": None, "raw": answer,
                "attempts": tries, "timings": dict(timings)})
        return results

    @torch.inference_mode()
    def describe(self, images: list[Image.Image]) -> list[str]:
        """Stage 1 alone: the descriptions of `images`, as `analyze_batch` writes them."""
        return self._describe(images).descriptions

    def _describe(self, images: list[Image.Image], reserve: int = 0) -> _Described:
        """Stage 1; a static cache (greedy only) gets `reserve` tokens more room."""
        inputs = self.processor(images=images, text=[self._prompt] * len(images), padding=True,
                                return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        prompt_len = inputs["input_ids"].shape[1]
        static = self.static_cache and self.num_beams == 1
        extra = {self._cache_kwarg: self._static(prompt_len + self.max_description_tokens + reserve)} if static else {}
        out = self.model.generate(**inputs, do_sample=False, num_beams=self.num_beams,
                                  max_new_tokens=self.max_description_tokens, pad_token_id=self._pad,
                                  return_dict_in_generate=True, **extra)
        generated = out.sequences[:, prompt_len:]
        is_end = torch.zeros_like(generated, dtype=torch.bool)
        for token in self._eos:
            is_end |= generated == token
        width = generated.shape[1]
        lengths = [int(row.nonzero()[0]) if row.any() else width for row in is_end.cpu()]
        descriptions = [self.processor.tokenizer.decode(row[:n], skip_special_tokens=True).strip()
                        for row, n in zip(generated, lengths)]
        cache = out.get("cache" if "cache" in out else "past_key_values") if self.num_beams == 1 else None
        return _Described(inputs, out.sequences, lengths, cache, list(range(len(images))), descriptions)

    def _relevance(self, d: _Described, tails: list[list[int]], rows: list[int], temperature: float,
                   seed: int) -> list[tuple[str, dict[int, float] | None]]:
        """(stage-2 answer, its score distribution) of `rows`, continuing stage 1 through its cache or encoding from
        scratch."""
        index = torch.tensor(rows, device=self.device)
        tail_ids, tail_mask = self._left_pad([tails[i] for i in rows])
        # A static cache's rows cannot be selected: a retry of some of its rows re-encodes them.
        if self.reuse_prefix and d.cache is not None and (rows == d.cache_rows or not isinstance(d.cache, StaticCache)):
            cache, cached = self._narrow_cache(d, rows)
            # Only what the cache lacks goes in (generate reads the cache's length off the longer mask): at most
            # the last description token, then the tail. Positions come from the mask, so the masked ones add none.
            prompt_len = d.inputs["input_ids"].shape[1]
            end = max(cached, prompt_len + max(d.lengths[i] for i in rows))
            described = torch.arange(end - prompt_len, device=self.device)[None, :] < \
                torch.tensor([d.lengths[i] for i in rows], device=self.device)[:, None]
            input_ids = torch.cat([d.sequences[index, cached:end], tail_ids], dim=1)
            mask = torch.cat([d.inputs["attention_mask"][index], described.long(), tail_mask], dim=1)
            extra = {self._cache_kwarg: cache}
        else:
            prompt_len = d.inputs["input_ids"].shape[1]
            seqs = [torch.cat([d.inputs["input_ids"][i][d.inputs["attention_mask"][i].bool()],
                               d.sequences[i, prompt_len:prompt_len + d.lengths[i]],
                               torch.tensor(tails[i], device=self.device, dtype=torch.long)]).tolist()
                    for i in rows]
            input_ids, mask = self._left_pad(seqs)
            extra = {"pixel_values": d.inputs["pixel_values"][index]}
            if self.static_cache:
                extra[self._cache_kwarg] = self._static(input_ids.shape[1] + self.max_analysis_tokens)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": self.top_p} if temperature > 0 \
            else {"do_sample": False}
        torch.manual_seed(seed)
        out = self.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=self.max_analysis_tokens,
                                  num_beams=1, pad_token_id=self._pad, return_dict_in_generate=True,
                                  output_logits=True, **sampling, **extra)
        if d.cache is not None and extra.get(self._cache_kwarg) is d.cache:
            d.cache.crop(cached - int(d.cache.get_seq_length()))  # negative: drop the tokens stage 2 added
        generated = out.sequences[:, input_ids.shape[1]:]
        texts = self.processor.tokenizer.batch_decode(generated, skip_special_tokens=True)
        logits = torch.stack(out.logits, dim=1).float()  # [rows, steps, vocab], before temperature and top-p
        return [(text, self._scores.distribution(row.tolist(), row_logits))
                for text, row, row_logits in zip(texts, generated, logits)]

    def _narrow_cache(self, d: _Described, rows: list[int]) -> tuple[Any, int]:
        """Stage 1's cache holding just `rows`, and its length. generate() extends it in place; `_relevance` rolls
        it back afterwards for retries (a copy where a layer type cannot be rolled back). Narrowed to the rows
        still being retried (nothing to select when they are all of them), and cropped after the longest
        description of those rows: the columns past it are masked in every row, and a mask with no masked column
        (batch 1) is dropped by generate, so attention runs without one (SDPA's fast kernels, no mask built
        each step)."""
        croppable = getattr(d.cache, "is_croppable", True)
        cache = d.cache if croppable else copy.deepcopy(d.cache)
        positions = [d.cache_rows.index(i) for i in rows]
        if positions != list(range(len(d.cache_rows))):
            cache.batch_select_indices(torch.tensor(positions, device=self.device))
            if croppable:
                d.cache_rows = list(rows)
        cached = int(cache.get_seq_length())  # a static cache counts in a tensor
        described = d.inputs["input_ids"].shape[1] + max(d.lengths[i] for i in rows)
        if croppable and cached > described:
            cache.crop(described - cached)
            cached = described
        return cache, cached

    def _static(self, length: int) -> StaticCache:
        """An empty static cache for at least `length` tokens (rounded up to STATIC_CACHE_STEP)."""
        return StaticCache(config=self.model.config, max_cache_len=-(-length // STATIC_CACHE_STEP) * STATIC_CACHE_STEP)

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
                mask[i, width - len(r):] = 1
        return ids.to(self.device), mask.to(self.device)
