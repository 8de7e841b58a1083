"""Images as uint8 pixels on the CPU, finished (rescale, normalise, dtype) on the device.

A CLIP image processor resizes (bicubic, shortest edge), centre-crops, then rescales and normalises in
float32 numpy, all in the loader: most of a loader worker's time, and 4x the bytes to collate, pin and copy.
`PixelPipeline` does only the resize and crop, with PIL, and returns a uint8 [3, H, W] tensor; `PixelNormalise`
(a module, so it moves and compiles with the model) rescales and normalises a uint8 batch on the device with
the processor's own constants. Together they give the processor's tensors to float rounding
(tests/test_data_pixels.py): the resize is the processor's PIL call and the crop transformers' own. (Resizing
only the cropped region with PIL's `box=` is a third faster but not exact: it moves a sample by one level now and
then.)

Large sources are read at a reduced size where the format allows: a JPEG is decoded at 1/2, 1/4 or 1/8 scale
(`draft_size`, PIL's DCT scaling) and any image is first shrunk by an integer factor (PIL's `reducing_gap`),
in both cases only while it stays at least `REDUCING_GAP` times the size the resize needs. That is the one
place where the result may differ from the processor's (by what PIL calls "indistinguishable from fair
resampling in most cases"); an upscaled or mildly downscaled image is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.image_transforms import center_crop

from animatch.errors import UserError

REDUCING_GAP = 3.0


@dataclass(frozen=True)
class PixelPipeline:
    """The resize and centre crop of an image processor, as uint8. `shortest_edge` or (`height`, `width`) is
    the resize target; `crop` is (height, width) or None."""
    shortest_edge: int | None
    height: int | None
    width: int | None
    crop: tuple[int, int] | None
    resample: int
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_processor(cls, image_processor: Any) -> PixelPipeline:
        """The pipeline of a CLIP-style image processor (resize by shortest edge or to height x width, optional
        centre crop, rescale, normalise); a processor that does anything else is refused."""
        ip = image_processor
        size = ip.size if ip.do_resize else None
        if size is None or getattr(size, "longest_edge", None) or not (
                size.get("shortest_edge") or (size.get("height") and size.get("width"))):
            raise UserError(f"unsupported image processor {type(ip).__name__}: animatch needs a resize by shortest "
                            f"edge or to height x width, got size={size}")
        if getattr(ip, "do_pad", None):
            raise UserError(f"unsupported image processor {type(ip).__name__}: padding is not supported")
        return cls(shortest_edge=size.get("shortest_edge"), height=size.get("height"), width=size.get("width"),
                   crop=(int(ip.crop_size["height"]), int(ip.crop_size["width"])) if ip.do_center_crop else None,
                   resample=int(ip.resample), rescale=float(ip.rescale_factor) if ip.do_rescale else 1.0,
                   mean=tuple(ip.image_mean) if ip.do_normalize else (0.0, 0.0, 0.0),
                   std=tuple(ip.image_std) if ip.do_normalize else (1.0, 1.0, 1.0))

    @property
    def draft_size(self) -> tuple[int, int]:
        """The smallest (width, height) a source may be decoded at (JPEG draft) without losing detail."""
        if self.shortest_edge:
            side = int(self.shortest_edge * REDUCING_GAP)
            return side, side
        return int(self.width * REDUCING_GAP), int(self.height * REDUCING_GAP)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the processor's resize (transformers' `get_resize_output_image_size`)."""
        if not self.shortest_edge:
            return self.width, self.height
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.shortest_edge * long / short)
        return (self.shortest_edge, new_long) if width <= height else (new_long, self.shortest_edge)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> uint8 [3, H, W]: resized and centre-cropped by the processor's own calls."""
        resized = np.asarray(image.resize(self.resized_size(*image.size), self.resample, reducing_gap=REDUCING_GAP))
        chw = resized.transpose(2, 0, 1)
        if self.crop:
            chw = center_crop(chw, self.crop, input_data_format="channels_first")
        return torch.from_numpy(np.ascontiguousarray(chw))

    def normaliser(self) -> PixelNormalise:
        return PixelNormalise(self.rescale, self.mean, self.std)


class PixelNormalise(torch.nn.Module):
    """uint8 [B, 3, H, W] -> float [B, 3, H, W]: (x * rescale - mean) / std, in float32 as the processor does,
    then cast to `dtype`. A float batch (already normalised) passes through, cast."""

    def __init__(self, rescale: float, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.rescale = rescale
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if pixels.dtype != torch.uint8:
            return pixels.to(dtype)
        return ((pixels.float() * self.rescale - self.mean) / self.std).to(dtype)
