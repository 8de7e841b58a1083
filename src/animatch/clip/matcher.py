"""`Matcher`: the Python API for matching and search, loading the model (and an index) once.

    from animatch import Matcher
    m = Matcher.from_index("index/")            # the model recorded in index/index.json
    m.search_text("silver hair elf with twin tails", k=5)   # characters whose images match
    m.search_image("fan_art.png", k=5)                      # characters whose descriptions match
    m.match(["a.png", "b.png"], ["red hair, green eyes", "blue twin tails"])

Results of a search are deduplicated by character (a character with several images or records appears
once, at its best score). `Matcher.from_model` gives a matcher without an index, for `match` only.
How image and text embeddings become a ranked match (`score`, `top_matches`) is written here, for this API
and the `match` command alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from animatch.clip.search_index import SearchIndex, read_manifest
from animatch.errors import UserError

DECIMALS = 6  # of the cosines and probabilities of a match


def score(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosine [N_img, N_txt], softmax over the candidates of logit_scale * cosine)."""
    cosine = image_emb.float() @ text_emb.float().T
    return cosine, torch.softmax(logit_scale * cosine, dim=1)


def top_matches(cosine: torch.Tensor, prob: torch.Tensor, candidates: list[dict], top_k: int) -> list[list[dict]]:
    """Per image, its top_k candidates (rank, candidate fields, cosine, probability), best first."""
    k = min(top_k, cosine.shape[1])
    order = torch.argsort(cosine, dim=1, descending=True, stable=True)[:, :k]
    result = []
    for row, cols in enumerate(order.tolist()):
        result.append([{"rank": r + 1, **{f: v for f, v in candidates[c].items() if f != "file_names"},
                        "cosine": round(float(cosine[row, c]), DECIMALS),
                        "probability": round(float(prob[row, c]), DECIMALS)} for r, c in enumerate(cols)])
    return result


@dataclass
class MatchResult:
    """Scores of the readable images (rows, in input order) against the texts (columns)."""
    cosine: torch.Tensor
    probability: torch.Tensor
    image_indices: list[int]
    failures: list[tuple[str, str]] = field(default_factory=list)
    top: list[list[dict]] = field(default_factory=list)


class Matcher:
    """Construct with `Matcher.from_index(index_dir)` or `Matcher.from_model(model_dir_or_hub_id)`; `Matcher(model,
    processor)` takes an already loaded CLIP and its processor."""

    def __init__(self, model: Any, processor: Any = None, *, index_dir: str | Path | None = None, device: Any = None):
        if isinstance(model, (str, Path)) or processor is None:  # the common mistake: Matcher("index/")
            is_index = isinstance(model, (str, Path)) and (Path(model) / "index.json").is_file()
            loader = "Matcher.from_index" if is_index else "Matcher.from_model"
            raise TypeError(f"Matcher({str(model)[:80]!r}): load {'an index dir' if is_index else 'a model'} with "
                            f"{loader}(path) (Matcher.from_index for search, Matcher.from_model for match only); "
                            "Matcher(model, processor) takes a CLIP already loaded")
        self.model, self.processor = model, processor
        self.device = next(model.parameters()).device if device is None else torch.device(device)
        model.to(self.device).eval()
        self.index = SearchIndex(index_dir) if index_dir is not None else None
        self.records, self.manifest = (self.index.records, self.index.manifest) if self.index else ([], {})
        if self.index is not None:
            self.index.check_dim(int(model.config.projection_dim))

    @classmethod
    def from_model(cls, model: str, *, device: Any = None) -> Matcher:
        from animatch.models.hub import load_clip

        clip, processor = load_clip(model, device=device)
        return cls(clip, processor)

    @classmethod
    def from_index(cls, index_dir: str | Path, *, device: Any = None) -> Matcher:
        from animatch.models.hub import load_clip

        clip, processor = load_clip(read_manifest(index_dir)["model"], device=device)
        return cls(clip, processor, index_dir=index_dir)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        from animatch.clip.embed import embed_texts

        return embed_texts(self.model, self.processor, list(texts), device=self.device)

    def embed_image(self, image: Any) -> torch.Tensor:
        """[1, D] embedding of a path or a PIL image; UserError when the file cannot be read."""
        from animatch.clip.embed import embed_pil
        from animatch.data.images import ImageLoadError, load_image

        if not hasattr(image, "convert"):
            try:
                image = load_image(image)
            except ImageLoadError as e:
                raise UserError(f"cannot read image {image}: {e.reason}") from None
        return embed_pil(self.model, self.processor, [image], device=self.device)

    def _index(self) -> SearchIndex:
        if self.index is None:
            raise UserError("this Matcher has no index; use Matcher.from_index(index_dir)")
        return self.index

    def search_text(self, query: str, k: int = 10) -> list[dict]:
        """Characters whose images best match a text: rank, score, character, title, image path, id."""
        return self._index().image_hits(self.embed_texts([query]).numpy(), k)

    def search_image(self, image: Any, k: int = 10) -> list[dict]:
        """Characters whose descriptions best match an image (path or PIL): rank, score, character, title,
        appearance, id."""
        return self._index().text_hits(self.embed_image(image).numpy(), k)

    def match(self, images: Sequence[Any], texts: Sequence[str], top_k: int = 5) -> MatchResult:
        """Score images (all paths, or all PIL images) against texts; unreadable files are listed, not raised."""
        from animatch.clip.embed import embed_images, embed_pil

        if images and all(hasattr(im, "convert") for im in images):
            emb, ok, failures = embed_pil(self.model, self.processor, list(images), device=self.device), \
                list(range(len(images))), []
        else:
            emb, ok, failures = embed_images(self.model, self.processor, list(images), device=self.device,
                                             progress=False)
        cosine, prob = score(emb, self.embed_texts(texts), self.logit_scale)
        top = top_matches(cosine, prob, [{"candidate": t} for t in texts], top_k)
        return MatchResult(cosine, prob, ok, failures, top)
