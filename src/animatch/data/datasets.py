"""Training data for CLIP: one (augmented image, sampled appearance text) pair per character.

The text of a training pair starts at a randomly chosen appearance chunk: with `text_sampling="window"`
(the default) it is `chunk_windows`' view from there, as much of the appearance as fits in 77 tokens;
with "chunk" it is that chunk alone. Given the tokenizer, the dataset hands out the view's token ids
(`WindowTokens`: each record's chunks tokenised once, a view's ids joined from them, where that is exactly what
the tokenizer gives) and `PairCollator` only pads them; otherwise the collator tokenises each text.

Everything random here is derived from (seed, epoch, index), never from a worker's global RNG, so an
epoch yields the same pairs whatever the number of workers or processes, and a resumed run sees exactly
the batches the interrupted one would have. `epoch_batches` shards one global order across processes
(global batch = processes x batch size, in the same order for any process count); `RunBatches` chains the
epochs of a run for one DataLoader. Images that fail to load, or whose file_name leaves the data root
(`safepath.path_inside`), come back as error items; `PairCollator` drops them and reports them, so they are
counted, not lost.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from animatch.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from animatch.data.pixels import PixelPipeline
from animatch.data.safepath import path_inside
from animatch.data.text import chunk_windows
from animatch.data.window_tokens import WindowTokens

TEXT_SAMPLING = ("window", "chunk")


def random_resized_crop(image: Image.Image, rng: random.Random, scale: tuple[float, float],
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Image.Image:
    """torchvision's RandomResizedCrop box choice (without torchvision); resizing is `PixelPipeline`'s job.
    The crop stays here, before the resize, rather than on the device: cropping the source is what makes the
    bicubic resize see the pixels the processor would, and it costs ~10 us a sample."""
    width, height = image.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return image.crop((left, top, left + w, top + h))
    return image  # no valid box in 10 tries (extreme aspect ratio): keep the whole image


def _chunks(record: dict) -> list[str]:
    return record.get("appearance_chunks") or [record["appearance"]]


class PairDataset(torch.utils.data.Dataset):
    """Item i: {"pixel_values" (uint8 [3, H, W]), "text", "index"} for record i, plus "input_ids" (int32, the
    tokenizer's ids of "text" truncated to `max_length`) when given a `tokenizer` whose ids `WindowTokens` can
    build; or {"error", "file_name"} if its image fails. `image_processor` gives the resize, crop and (on the
    device) normalisation."""

    def __init__(self, records: Sequence[dict], root: str | Path, image_processor: Any, *, train: bool,
                 seed: int = 0, crop_scale: float = 0.8, hflip: bool = True, text_sampling: str = "window",
                 max_pixels: int = DEFAULT_MAX_PIXELS, tokenizer: Any = None, max_length: int = 77):
        if text_sampling not in TEXT_SAMPLING:
            raise ValueError(f"text_sampling must be one of {TEXT_SAMPLING}, got {text_sampling!r}")
        self.records = records
        self.root = Path(root)
        self.pixels = PixelPipeline.from_processor(image_processor)
        self.train = train
        self.seed = seed
        self.crop_scale = crop_scale
        self.hflip = hflip
        self.text_sampling = text_sampling
        self.max_pixels = max_pixels
        self.tokens = None if tokenizer is None else WindowTokens.for_records(
            tokenizer, max_length, (_chunks(r) for r in records), window=text_sampling == "window")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """`dataset[i]`: record i as in epoch 0; `dataset[epoch, i]`: with that epoch's augmentation and text."""
        epoch, i = key if isinstance(key, tuple) else (0, key)
        record = self.records[i]
        rng = random.Random(f"{self.seed}:{epoch}:{i}")
        try:
            image = load_image(path_inside(self.root, record["file_name"]), max_pixels=self.max_pixels,
                               draft_size=self.pixels.draft_size)
        except ImageLoadError as e:
            return {"error": e.reason, "file_name": record["file_name"]}
        chunks = _chunks(record)
        views = chunk_windows(chunks) if self.text_sampling == "window" else chunks
        view = 0
        if self.train:
            image = random_resized_crop(image, rng, (self.crop_scale, 1.0))
            if self.hflip and rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            # Start at any chunk, not always the first sentence (often a summary the model could shortcut on).
            view = rng.choice(range(len(views)))  # the draw rng.choice(views) makes
        item = {"pixel_values": self.pixels(image), "text": views[view], "index": i}
        if self.tokens is not None:
            item["input_ids"] = self.tokens.ids(i, chunks, view)
        return item


@dataclass
class PairCollator:
    """Drops failed items (reported in "skipped"), stacks images, pads the items' "input_ids" (or, where items
    have none, tokenises their texts) to the longest, as the tokenizer pads."""
    tokenizer: Any
    max_length: int = 77

    def __call__(self, items: list[dict]) -> dict:
        good = [it for it in items if "error" not in it]
        skipped = [(it["file_name"], it["error"]) for it in items if "error" in it]
        if not good:
            return {"skipped": skipped, "size": 0}
        if all("input_ids" in it for it in good):
            tokens = self.pad_ids([it["input_ids"] for it in good])
        else:
            tokens = self.tokenizer([it["text"] for it in good], padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt")
        return {
            "pixel_values": torch.stack([it["pixel_values"] for it in good]),  # uint8 [B, 3, H, W]
            "input_ids": tokens["input_ids"],  # [B, T<=max_length]
            "attention_mask": tokens["attention_mask"],
            "indices": torch.tensor([it["index"] for it in good]),
            "skipped": skipped,
            "size": len(good),
        }

    def pad_ids(self, rows: list) -> dict[str, torch.Tensor]:
        """`rows` of ids padded as `tokenizer(..., padding=True)` pads: its pad id, on its padding side."""
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for n, row in enumerate(rows):
            cols = slice(width - len(row), width) if self.tokenizer.padding_side == "left" else slice(0, len(row))
            input_ids[n, cols] = torch.as_tensor(row)
            attention_mask[n, cols] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}


def epoch_batches(n: int, batch_size: int, *, world: int, rank: int, seed: int, epoch: int,
                  groups: Sequence[int] | None = None) -> list[list[int]]:
    """This process's batches of one epoch: a seeded global permutation cut into global batches of
    `world * batch_size` (the incomplete last one dropped: contrastive batches must be full), each split
    into `world` consecutive slices. With `groups` (a group id per item), each global batch holds one group's
    items and the batches of all groups come in a seeded order (as LLaVA's group_by_modality_length: short
    examples are not padded to the length of long ones); an incomplete last batch of each group is dropped."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    global_batch = world * batch_size
    runs = [order] if groups is None else [[i for i in order if groups[i] == g] for g in sorted(set(groups))]
    starts = [(run, start) for run in runs for start in range(0, len(run) - global_batch + 1, global_batch)]
    if groups is not None:
        starts = [starts[k] for k in torch.randperm(len(starts), generator=generator).tolist()]
    return [run[start + rank * batch_size: start + (rank + 1) * batch_size] for run, start in starts]


class RunBatches:
    """The batch sampler of a whole run: `epoch_batches` of epoch after epoch, from batch `start` of `epoch`
    through `last_epoch`, each batch a list of (epoch, index) keys. One DataLoader then serves every epoch: its
    workers live across epochs and prefetch over the boundaries, and each item carries its epoch to them."""

    def __init__(self, n: int, batch_size: int, *, world: int, rank: int, seed: int, epoch: int, start: int,
                 last_epoch: int):
        self.n, self.batch_size, self.world, self.rank, self.seed = n, batch_size, world, rank, seed
        self.epoch, self.start, self.last_epoch = epoch, start, last_epoch

    @property
    def per_epoch(self) -> int:
        """Batches of one whole epoch (for this process)."""
        return self.n // (self.world * self.batch_size)

    def __iter__(self):
        start = self.start
        for epoch in range(self.epoch, self.last_epoch + 1):
            for batch in epoch_batches(self.n, self.batch_size, world=self.world, rank=self.rank, seed=self.seed,
                                       epoch=epoch)[start:]:
                yield [(epoch, i) for i in batch]
            start = 0
