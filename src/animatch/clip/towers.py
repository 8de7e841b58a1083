"""The training forward of CLIP: normalised image and text embeddings of a batch, the text tower optionally run
in length buckets.

Dynamic padding pads a batch to its longest text, so a long-tailed set of descriptions feeds the text tower
padding (on the synthetic set a seventh of its tokens), and on a CPU the text tower is most of a training
step. With `text_buckets` > 1 the texts are sorted by length and the tower runs on that many groups, each cut to
its own longest text; the embeddings go back in batch order. They are the same embeddings (to float rounding):
CLIP's text tower is causal and pools at the end token, so no real token looks at the padding after it, and the
attention mask is cut with the ids. On a GPU one large batch is usually faster than several small ones (not
measured here): leave it at 1 there. `ClipForward` wraps the `CLIPModel` so that accelerate prepares one module
and DDP synchronises one forward call per micro-batch; it also finishes uint8 pixels on the device
(`animatch.data.pixels.PixelNormalise`), inside the module that `train --compile` compiles.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from animatch.data.pixels import PixelNormalise


def text_lengths(attention_mask: torch.Tensor) -> torch.Tensor:
    """Per row, one past the last attended position (right padding: the text length; left padding: the width)."""
    width = attention_mask.shape[1]
    return width - attention_mask.flip(1).to(torch.int64).argmax(dim=1)  # [B]


class ClipForward(torch.nn.Module):
    """`forward(input_ids, attention_mask, pixel_values)` -> (image embeddings [B, D], text embeddings [B, D]),
    both L2-normalised as `CLIPModel` returns them. `pixels` normalises uint8 pixel values (float ones pass)."""

    def __init__(self, clip, text_buckets: int = 1, pixels: PixelNormalise | None = None):
        super().__init__()
        if text_buckets < 1:
            raise ValueError(f"text_buckets must be >= 1, got {text_buckets}")
        self.clip = clip
        self.text_buckets = text_buckets
        self.pixels = pixels

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pixels is not None:
            pixel_values = self.pixels(pixel_values, self.clip.vision_model.embeddings.patch_embedding.weight.dtype)
        images = self.clip.get_image_features(pixel_values=pixel_values).pooler_output  # [B, D]
        return F.normalize(images, dim=-1), F.normalize(self._texts(input_ids, attention_mask), dim=-1)

    def _texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.text_buckets == 1:
            return self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        lengths = text_lengths(attention_mask)
        order = lengths.argsort(stable=True)
        embeddings = []
        for group in order.chunk(self.text_buckets):
            width = int(lengths[group].max())
            embeddings.append(self.clip.get_text_features(input_ids=input_ids[group, :width],
                                                          attention_mask=attention_mask[group, :width]).pooler_output)
        return torch.cat(embeddings)[order.argsort()]  # [B, D], back in batch order
