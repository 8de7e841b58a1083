"""Judge training examples as model inputs: token ids, labels and loss weights, batched.

`ExampleEncoder` turns a written example (`judge.data`) into ids exactly as the judge builds its inputs: the
processor on the image and the stage-1 prompt (image tokens expanded), then for stage 2 the context
description's ids and `prompts.tail_token_ids` of the relevance turn, then the answer and the end-of-sequence
token. Labels are -100 everywhere except the answer and its end token: no prompt, image or padding token carries
loss; the score's digits weigh `score_loss_weight` in the loss. `JudgeExampleDataset` serves an epoch's plan,
encoded, substituting the next items for unloadable or too-long ones (counted, never lost); `ExampleCollator`
right-pads a batch; `LengthGroupCollator` batches a run of batches' examples by length first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from animatch.config import JudgeTrainConfig
from animatch.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from animatch.data.safepath import path_inside
from animatch.errors import UserError
from animatch.judge import prompts
from animatch.judge.data import plan_epoch, token_ids
from animatch.judge.scores import ScoreTokens

IGNORE_INDEX = -100
MAX_SUBSTITUTES = 16


class ExampleEncoder:
    """Token ids and labels of planned examples, built from the same pieces the judge feeds the model."""

    def __init__(self, processor: Any, score_weight: float = 1.0):
        self.processor, self.tokenizer, self.score_weight = processor, processor.tokenizer, score_weight
        self.scores = ScoreTokens(self.tokenizer)
        self.stage1_prompt = prompts.render_description_prompt(processor)
        self.eos = self.tokenizer.eos_token_id
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(processor.image_token)

    def prompt_ids(self, image: Image.Image, spec: dict) -> tuple[list[int], torch.Tensor, slice]:
        """(the ids the model sees before the answer, pixel values, where in them the stage-1 answer is: its
        description ids and the end token after them; empty for a description example)."""
        batch = self.processor(images=image, text=self.stage1_prompt, return_tensors="pt")
        ids = batch["input_ids"][0].tolist()
        described = slice(len(ids), len(ids))
        if spec["kind"] != "description":
            tail = prompts.tail_token_ids(self.tokenizer, prompts.relevance_tail(self.processor, spec["text"]))
            ids += token_ids(self.tokenizer, spec["description"])
            described = slice(described.start, len(ids) + (tail[:1] == [self.eos]))
            ids += tail
        return ids, batch["pixel_values"][0], described

    def encode(self, image: Image.Image, spec: dict) -> dict:
        """{"input_ids", "labels", "weights", "pixel_values"}: labels -100 on everything but the answer + end
        token (and the stage-2 context's description + end token when `spec["describes"]`: then it is a stage-1
        answer too); weights (of each label in the loss) 1, `score_weight` on the score's digits of a stage-2
        answer."""
        prompt, pixel_values, described = self.prompt_ids(image, spec)
        answer = token_ids(self.tokenizer, spec["answer"]) + [self.eos]
        labels = [IGNORE_INDEX] * len(prompt) + answer
        weights = [0.0] * len(prompt) + [1.0] * len(answer)
        if spec.get("describes"):
            labels[described] = prompt[described]
            weights[described] = [1.0] * (described.stop - described.start)
        input_ids = prompt + answer
        labels = [IGNORE_INDEX if t == self.image_token_id else label for t, label in zip(input_ids, labels)]
        step = self.scores.position(answer) if spec["kind"] != "description" else None
        while step is not None and step < len(answer) and answer[step] in self.scores.digit_tokens:
            weights[len(prompt) + step] = self.score_weight
            step += 1
        return {"input_ids": torch.tensor(input_ids), "labels": torch.tensor(labels),
                "weights": torch.tensor(weights), "pixel_values": pixel_values}


class JudgeExampleDataset(torch.utils.data.Dataset):
    """Item i of the current epoch's plan, encoded. When its image fails to load or it is longer than
    `max_length` or the tokenizer's `model_max_length` (a model with absolute positions has no more), the next
    items are tried instead (up to MAX_SUBSTITUTES), so a batch is never short; the failures travel with the item
    in "skipped" to be counted. Call `set_epoch` before each epoch (it redraws the plan; `own`,
    `describe_only` and `noisy` as in `plan_epoch`)."""

    def __init__(self, records: list[dict], root: str | Path, processor: Any, cfg: JudgeTrainConfig, seed: int,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.records, self.root, self.cfg, self.seed, self.max_pixels = records, Path(root), cfg, seed, max_pixels
        self.encoder = ExampleEncoder(processor, cfg.score_loss_weight)
        self.max_length = min(cfg.max_length, self.encoder.tokenizer.model_max_length)
        self.set_epoch(0)

    def set_epoch(self, epoch: int, own: dict[int, str] | None = None, describe_only: bool = False,
                  noisy: bool = True) -> None:
        self.plan = plan_epoch(self.records, self.cfg, self.encoder.tokenizer, self.seed, epoch, own, describe_only,
                               noisy)

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
            if len(example["input_ids"]) <= self.max_length:
                return {**example, "kind": spec["kind"], "skipped": skipped}
            skipped.append((file_name, f"longer than {self.max_length} tokens"))
        raise UserError(f"{MAX_SUBSTITUTES} examples in a row could not be used (last: {skipped[-1][0]}: "
                        f"{skipped[-1][1]}); check the images and --max-length")


@dataclass
class ExampleCollator:
    """Right-pads a batch: labels -100, weight 0 and attention 0 on the padding."""
    pad_token_id: int

    def __call__(self, items: list[dict]) -> dict:
        width = max(len(it["input_ids"]) for it in items)
        input_ids = torch.full((len(items), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
        weights = torch.zeros((len(items), width))
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            input_ids[row, :n], labels[row, :n], attention_mask[row, :n] = it["input_ids"], it["labels"], 1
            weights[row, :n] = it["weights"]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "weights": weights,
                "pixel_values": torch.stack([it["pixel_values"] for it in items]), "size": len(items),
                "skipped": [s for it in items for s in it["skipped"]], "kinds": [it["kind"] for it in items]}


@dataclass
class LengthGroupCollator:
    """The examples of a run of batches (`config.LENGTH_GROUP_BATCHES` of them, loaded at once), sorted by
    length and cut again into batches of `batch_size`, each collated: a batch's examples then have about the same
    length, so little of a step is padding (as transformers' `group_by_length` within a megabatch). With `by_kind`
    the kind sorts first, so batches of one kind (`group_by_kind`) stay so. Returns the list of collated batches;
    a run of one batch is that batch."""
    collate: ExampleCollator
    batch_size: int
    by_kind: bool

    def __call__(self, items: list[dict]) -> list[dict]:
        items = sorted(items, key=lambda it: (self.by_kind and it["kind"] == "description", len(it["input_ids"])))
        return [self.collate(items[i:i + self.batch_size]) for i in range(0, len(items), self.batch_size)]
