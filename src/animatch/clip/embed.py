"""CLIP embedding of image files and texts: the one place that turns inputs into vectors, so that training
validation, eval, match, index, audit and serve compare like with like.

Every result is an L2-normalised float32 CPU tensor. Image files are decoded in worker processes (uint8 until
the device, `data.pixels`), and one that cannot be read is reported as `(path, reason)`, never raised. A
long appearance text is the mean of its views' embeddings (`chunk_windows` of its chunks, as training
samples them). With an `clip.cache.EmbeddingCache` only inputs missing from it are embedded. Under
`accelerate launch`, `open_sharded_clip` and `embed_sharded` split a folder's images across the processes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from animatch.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from animatch.data.pixels import PixelPipeline
from animatch.data.text import chunk_windows

# New cache entries are written every this many embeddings, so an interrupted run keeps most of its work.
CACHE_FLUSH_EVERY = 4096


class _ImageFiles(Dataset):
    """Decodes, resizes and crops one file per item to uint8; a failure becomes a reason string, never an
    exception."""

    def __init__(self, paths: Sequence[str | Path], pixels: PixelPipeline, max_pixels: int):
        self.paths = [str(p) for p in paths]
        self.pixels = pixels
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            image = load_image(self.paths[i], max_pixels=self.max_pixels, draft_size=self.pixels.draft_size)
            pixels = self.pixels(image)
        except ImageLoadError as e:
            return i, None, e.reason
        except Exception as e:
            return i, None, f"{type(e).__name__}: {e}"[:200]
        return i, pixels, None


def _collate(items: list) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    """In the worker: (item numbers that loaded, their uint8 pixels stacked [N, 3, H, W] (one tensor to pin and
    copy), (item number, reason) of the rest)."""
    ok = [(i, px) for i, px, _ in items if px is not None]
    return [i for i, _ in ok], torch.stack([px for _, px in ok]) if ok else None, \
        [(i, reason) for i, px, reason in items if px is None]


def _model_device(model: torch.nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        device = torch.device(device)
        model.to(device)
        return device
    return next(model.parameters()).device


def _autocast(device: torch.device):
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _features(output: Any) -> torch.Tensor:
    """The projected embedding: transformers 5 returns an output object, older versions a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _normalised(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1).cpu()


def _dim(model: Any) -> int:
    return int(model.config.projection_dim)


def embed_images(model: Any, processor: Any, paths: Sequence[str | Path], *, batch_size: int = 64,
                 device: str | torch.device | None = None, workers: int = 0, cache: Any = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True,
                 ) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
    """Embed image files. Returns (embeddings of the readable files [N_ok, D], their indices into `paths`,
    (path, reason) of each unreadable file), in the order of `paths`. `device` (default: the model's)
    moves the model there; `workers` decoding processes (0: decode in this process)."""
    paths = [str(p) for p in paths]
    device = _model_device(model, device)
    dtype = next(model.parameters()).dtype
    rows: dict[int, torch.Tensor] = {}
    todo = list(range(len(paths)))
    keys: list[str | None] = []
    if cache is not None:
        keys = [cache.image_key(p) for p in paths]  # None for a file that cannot be stat'ed
        todo = []
        for i, hit in enumerate(cache.get("image", keys)):
            if hit is None:
                todo.append(i)
            else:
                rows[i] = hit
    failures: dict[int, str] = {}
    if todo:
        pipeline = PixelPipeline.from_processor(processor.image_processor)
        normalise = pipeline.normaliser().to(device)
        dataset = _ImageFiles([paths[i] for i in todo], pipeline, max_pixels)
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                            pin_memory=device.type == "cuda")
        pending_keys: list[str] = []
        pending: list[torch.Tensor] = []
        model.eval()
        with tqdm(total=len(todo), unit="img", desc="embedding images", disable=not progress) as bar, \
                torch.inference_mode():
            for loaded, stacked, failed in loader:
                ok = [todo[j] for j in loaded]
                failures.update((todo[j], reason) for j, reason in failed)
                if ok:
                    pixels = normalise(stacked.to(device, non_blocking=True), dtype)
                    with _autocast(device):
                        emb = _normalised(_features(model.get_image_features(pixel_values=pixels)))
                    for i, e in zip(ok, emb):
                        rows[i] = e
                        if cache is not None and keys[i] is not None:
                            pending_keys.append(keys[i])
                            pending.append(e)
                if cache is not None and len(pending) >= CACHE_FLUSH_EVERY:
                    cache.put("image", pending_keys, torch.stack(pending))
                    pending_keys, pending = [], []
                bar.update(len(loaded) + len(failed))
        if cache is not None and pending:
            cache.put("image", pending_keys, torch.stack(pending))
    ok_indices = sorted(rows)
    embeddings = torch.stack([rows[i] for i in ok_indices]) if ok_indices else torch.empty(0, _dim(model))
    return embeddings, ok_indices, [(paths[i], failures[i]) for i in sorted(failures)]


def embed_texts(model: Any, processor: Any, texts: Sequence[str], *, batch_size: int = 256,
                device: str | torch.device | None = None, cache: Any = None,
                progress: bool = False) -> torch.Tensor:
    """Embed texts (truncated at the model's max positions, 77 for CLIP). Returns [N, D]."""
    texts = list(texts)
    device = _model_device(model, device)
    unique = list(dict.fromkeys(texts))  # repeated texts are embedded once
    found: dict[str, torch.Tensor] = {}
    if cache is not None and unique:
        for text, hit in zip(unique, cache.get("text", [cache.text_key(t) for t in unique])):
            if hit is not None:
                found[text] = hit
    todo = [t for t in unique if t not in found]
    max_length = int(model.config.text_config.max_position_embeddings)
    pending: list[str] = []
    model.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(todo), batch_size), desc="embedding texts", unit="batch",
                          disable=not progress or len(todo) <= batch_size):
            batch = todo[start:start + batch_size]
            tokens = processor.tokenizer(batch, padding=True, truncation=True, max_length=max_length,
                                         return_tensors="pt").to(device)
            with _autocast(device):
                emb = _normalised(_features(model.get_text_features(
                    input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])))
            found.update(zip(batch, emb))
            pending += batch
            if cache is not None and (len(pending) >= CACHE_FLUSH_EVERY or start + batch_size >= len(todo)):
                cache.put("text", [cache.text_key(t) for t in pending], torch.stack([found[t] for t in pending]))
                pending = []
    if not texts:
        return torch.empty(0, _dim(model))
    return torch.stack([found[t] for t in texts])


def embed_chunked(model: Any, processor: Any, chunks_per_item: Sequence[Sequence[str]], *,
                  batch_size: int = 256, device: str | torch.device | None = None, cache: Any = None,
                  progress: bool = False, windows: bool = True) -> torch.Tensor:
    """One embedding per item: the renormalised mean of the normalised embeddings of its views, which are
    `chunk_windows` of its chunks (the views training samples), or the bare chunks with `windows=False`.
    Returns [N, D]."""
    for n, chunks in enumerate(chunks_per_item):
        if not chunks:
            raise ValueError(f"item {n} has no text chunks")
    if windows:
        chunks_per_item = [chunk_windows(list(chunks)) for chunks in chunks_per_item]
    flat = [c for chunks in chunks_per_item for c in chunks]
    emb = embed_texts(model, processor, flat, batch_size=batch_size, device=device, cache=cache,
                      progress=progress)
    if not flat:
        return emb
    owner = torch.tensor([n for n, chunks in enumerate(chunks_per_item) for _ in chunks])
    return pool_embeddings(emb, owner, len(chunks_per_item))


def pool_embeddings(emb: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """[M, D] normalised embeddings, owner [M] in 0..n-1 -> [n, D]: each owner's renormalised mean."""
    return F.normalize(torch.zeros(n, emb.shape[1]).index_add_(0, owner, emb), dim=-1)


def embed_pil(model: Any, processor: Any, images: Sequence[Any], *, batch_size: int = 64,
              device: str | torch.device | None = None) -> torch.Tensor:
    """Embed in-memory PIL images (already decoded, so nothing can fail here). Returns [N, D]."""
    device = _model_device(model, device)
    pipeline = PixelPipeline.from_processor(processor.image_processor)
    normalise = pipeline.normaliser().to(device)
    out = [torch.empty(0, _dim(model))]
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.stack([pipeline(im.convert("RGB")) for im in images[start:start + batch_size]])
            pixels = normalise(batch.to(device), next(model.parameters()).dtype)
            with _autocast(device):
                out.append(_normalised(_features(model.get_image_features(pixel_values=pixels))))
    return torch.cat(out)


def embed_sharded(model: Any, processor: Any, paths: list[Path], cache: Any, state: Any, *, batch_size: int,
                  workers: int):
    """Embed this process's share of `paths`; gather every share (global indices) on all processes."""
    from accelerate.utils import gather_object

    with state.split_between_processes(list(range(len(paths)))) as shard:
        emb, ok, failures = embed_images(model, processor, [paths[i] for i in shard], batch_size=batch_size,
                                         workers=workers, cache=cache, progress=state.is_local_main_process)
        part = {"indices": [shard[i] for i in ok], "embeddings": emb, "failures": failures,
                "stats": asdict(cache.stats) if cache is not None else {}}
    parts = gather_object([part]) if state.num_processes > 1 else [part]
    rows = {i: e for p in parts for i, e in zip(p["indices"], p["embeddings"])}
    ok_indices = sorted(rows)
    emb = torch.stack([rows[i] for i in ok_indices]) if rows else torch.empty(0, model.config.projection_dim)
    failures = sorted(f for p in parts for f in p["failures"])
    stats: dict[str, int] = {}
    for p in parts:
        for name, n in p["stats"].items():
            stats[name] = stats.get(name, 0) + n
    return emb, ok_indices, failures, stats


def open_sharded_clip(cfg: Any) -> tuple[Any, Any, Any, Any]:
    """(process state, model, processor, embedding cache or None) for a job that shards images across the
    processes of `accelerate launch`; `cfg` has model, device, cache and cache_dir."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from animatch.clip.cache import EmbeddingCache
    from animatch.models.hub import load_clip

    # Without cpu=True, accelerate ignores a CPU multi-process launch (ACCELERATE_USE_CPU) and runs N copies.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
                         or str(cfg.device).startswith("cpu"))
    model, processor = load_clip(cfg.model, device=cfg.device or state.device)
    cache = EmbeddingCache(Path(cfg.cache_dir).expanduser(), model, processor) if cfg.cache else None
    return state, model, processor, cache
