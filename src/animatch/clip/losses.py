"""The symmetric contrastive (InfoNCE) loss, with global negatives across processes.

`ClipLoss` is the loss HF's `CLIPModel(return_loss=True)` computes, but over the features of *every*
process: with `gather_with_grad=True` the features are all-gathered with autograd
(`torch.distributed.nn.all_gather`), so each rank's samples see every other rank's samples as negatives
and gradients flow back to their owners. Every rank computes the same global loss; the all-gather's
backward sums the W identical contributions, and DDP's gradient averaging divides by W again, so the
parameter gradients equal those of one process on the concatenated batch. Local batches of unequal size
(invalid samples dropped in the collate step) are padded for the collective and sliced out again.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather_features(features: torch.Tensor, with_grad: bool = True) -> torch.Tensor:
    """[B_local, D] -> [B_global, D], concatenated in rank order; differentiable when `with_grad`.

    Without gradient, only the local slice keeps its autograd history (the others are constants): the
    cheaper variant, whose gradients are *not* those of the global loss.
    """
    world, rank = _world()
    if world == 1:
        return features
    size = torch.tensor([features.shape[0]], device=features.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    padded = F.pad(features, (0, 0, 0, max(sizes) - features.shape[0]))
    if with_grad:
        import torch.distributed.nn.functional as dist_nn
        # Deprecated in favour of a private module, and warned about on every step of a multi-process run;
        # it still gives the global gradients (tests/test_clip_losses.py checks them on 2 processes).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "torch.distributed.nn.functional.all_gather is deprecated")
            parts = list(dist_nn.all_gather(padded))
    else:
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.detach())
        parts[rank] = padded
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """Mean of image->text and text->image cross-entropy; row i of each modality is pair i.

    Features must be L2-normalised; `logit_scale` is the log of the temperature scale (as stored in
    `CLIPModel.logit_scale`).
    """
    logits_per_image = logit_scale.exp() * image_features @ text_features.t()  # [N, N]
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.t(), labels))


class ClipLoss(torch.nn.Module):
    """Contrastive loss over the global batch (all processes) when `gather` is on."""

    def __init__(self, gather: bool = True, gather_with_grad: bool = True):
        super().__init__()
        self.gather = gather
        self.gather_with_grad = gather_with_grad

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: torch.Tensor) -> torch.Tensor:
        if self.gather:
            image_features = gather_features(image_features, self.gather_with_grad)
            text_features = gather_features(text_features, self.gather_with_grad)
        return contrastive_loss(image_features.float(), text_features.float(), logit_scale.float())
