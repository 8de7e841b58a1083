"""Patch dropout (FLIP; open_clip's `patch_dropout`): in training, the vision tower sees its class token and a
random subset of the patch tokens.

Dropping half of the patches halves the vision tower's sequence, so a training step costs less, while the
kept patches are spread over the whole image; evaluation, and every other use of the model, sees all patches.
It is a forward hook on the CLIP vision embeddings (after the position embeddings are added, as in FLIP), so
it works on any HF `CLIPModel` without touching its code and leaves nothing in the saved checkpoint. The kept
patches come from a generator reseeded by (seed, step, micro-batch, process) before each forward: the cached
and the recomputed forward of an accumulated micro-batch keep the same patches (so the accumulated loss stays
exact), and a resumed run draws what the interrupted one would have.
"""

from __future__ import annotations

import torch

_MIX = (1_000_003, 1_009, 1_013)  # odd multipliers that spread (seed, step, micro, rank) over the seed space


class PatchDropout:
    """Keeps round((1 - rate) * patches) patch tokens per image while the vision embeddings are training."""

    def __init__(self, model, rate: float, seed: int = 0):
        if not 0 <= rate < 1:
            raise ValueError(f"patch dropout rate must be in [0, 1), got {rate}")
        self.rate, self.seed = rate, seed
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        self.handle = model.vision_model.embeddings.register_forward_hook(self._hook) if rate > 0 else None

    def reseed(self, step: int, micro: int = 0, rank: int = 0) -> None:
        key = self.seed
        for factor, part in zip(_MIX, (step, micro, rank)):
            key = key * factor + part
        self.generator.manual_seed(key % 2**63)

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def _hook(self, module, inputs, tokens: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return tokens
        batch, length, width = tokens.shape  # [B, 1 + P, D]: class token first
        keep = max(1, round((length - 1) * (1 - self.rate)))
        kept = torch.rand(batch, length - 1, generator=self.generator).argsort(dim=1)[:, :keep] + 1  # [B, keep]
        kept = kept.sort(dim=1).values.to(tokens.device)
        patches = tokens.gather(1, kept[..., None].expand(batch, keep, width))
        return torch.cat([tokens[:, :1], patches], dim=1)  # [B, 1 + keep, D]
