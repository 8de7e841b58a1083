"""On-disk embedding cache: per model, per image file and per text, safe to interrupt, never unpickled.

Layout: `ROOT/<model key>/{image,text}/<shard>.safetensors` (a float32 [n, D] tensor) plus
`<shard>.json` (the n keys, in row order). The JSON is written after the tensor file, both atomically,
so it is the commit marker: a shard without its JSON is ignored; a shard that cannot be read whole (a
truncated tensor file, a bad JSON) is reported on stderr and deleted, and its rows are embedded again.
Every write is a new uniquely named shard, so several processes (e.g. `accelerate launch`) can share one
cache without locks; shards are merged into one when there are more than `COMPACT_ABOVE` of them.

Keys: the model key is the sha256 of every state-dict tensor (name, dtype, shape, bytes), the model
config and the processor's image and tokenizer settings: computed once per cache object (about one
second per 500 MB of weights), it changes whenever anything that affects an embedding does. It does
not cover the device or autocast precision, whose differences are numerical noise. An image's key is
its resolved path, size and mtime (a stat call, so a cached rerun reads no image bytes; a moved or
rewritten file is simply embedded again). A text's key is the sha256 of its UTF-8 bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from animatch.runs import atomic_write_bytes, atomic_write_text

KINDS = ("image", "text")
COMPACT_ABOVE = 64


@dataclass
class CacheStats:
    """How many embeddings were computed vs served from the cache, per kind (tests assert on these)."""
    images_embedded: int = 0
    images_cached: int = 0
    texts_embedded: int = 0
    texts_cached: int = 0


def model_key(model: Any, processor: Any = None) -> str:
    """sha256 of the weights, the config and the processor settings (hex)."""
    h = hashlib.sha256()
    h.update(model.config.to_json_string(use_diff=False).encode())
    if processor is not None:
        h.update(processor.image_processor.to_json_string().encode())
        tok = processor.tokenizer
        h.update(f"{type(tok).__name__}:{len(tok)}:{tok.model_max_length}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_key(path: str | os.PathLike) -> str | None:
    """Resolved path + size + mtime of a file, or None when it cannot be stat'ed."""
    try:
        p = Path(path).resolve()
        st = p.stat()
    except OSError:
        return None
    return f"{p}|{st.st_size}|{st.st_mtime_ns}"


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Embeddings of one model under `root`; `get`/`put` by key, counting hits and new entries."""

    def __init__(self, root: str | os.PathLike, model: Any, processor: Any = None, *, key: str | None = None):
        self.key = key or model_key(model, processor)
        self.dir = Path(root) / self.key[:32]
        self.stats = CacheStats()
        self._rows: dict[str, dict[str, torch.Tensor]] = {kind: {} for kind in KINDS}
        for kind in KINDS:
            self._load(kind)

    image_key = staticmethod(file_key)
    text_key = staticmethod(text_key)

    def __len__(self) -> int:
        return sum(len(r) for r in self._rows.values())

    def _shards(self, kind: str) -> list[Path]:
        return sorted((self.dir / kind).glob("*.json"))

    def _load(self, kind: str) -> None:
        shards = self._shards(kind)
        for index in shards:
            try:
                keys = json.loads(index.read_text())["keys"]
                emb = load_file(index.with_suffix(".safetensors"))["embeddings"]
                if not (isinstance(keys, list) and emb.ndim == 2 and emb.shape[0] == len(keys)):
                    raise ValueError(f"{len(keys)} keys for a tensor of shape {tuple(emb.shape)}")
            except FileNotFoundError:
                continue  # a shard being compacted away by another process: its rows live on elsewhere
            except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
                self._drop_corrupt(index, e)
                continue
            self._rows[kind].update(zip(keys, emb))
        if len(shards) > COMPACT_ABOVE:
            self._compact(kind, shards)

    def _drop_corrupt(self, index: Path, error: Exception) -> None:
        """Report a shard that cannot be read and delete it; its rows are simply embedded again."""
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        print(f"warning: embedding cache: dropped the corrupt shard {index.with_suffix('')}.* ({detail}); its "
              "embeddings will be computed again", file=sys.stderr)
        index.unlink(missing_ok=True)
        index.with_suffix(".safetensors").unlink(missing_ok=True)

    def _write_shard(self, kind: str, keys: list[str], emb: torch.Tensor) -> None:
        folder = self.dir / kind
        folder.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        atomic_write_bytes(folder / f"{name}.safetensors", save({"embeddings": emb.float().contiguous()}))
        atomic_write_text(folder / f"{name}.json", json.dumps({"keys": keys, "dim": int(emb.shape[1])}))

    def _compact(self, kind: str, shards: list[Path]) -> None:
        rows = self._rows[kind]
        self._write_shard(kind, list(rows), torch.stack(list(rows.values())))
        for index in shards:
            index.unlink(missing_ok=True)
            index.with_suffix(".safetensors").unlink(missing_ok=True)

    def get(self, kind: str, keys: list[str | None]) -> list[torch.Tensor | None]:
        """The cached embedding of each key, or None (always for a None key); hits are counted in `stats`."""
        rows = self._rows[kind]
        found = [rows.get(k) for k in keys]
        hits = sum(f is not None for f in found)
        if kind == "image":
            self.stats.images_cached += hits
        else:
            self.stats.texts_cached += hits
        return found

    def put(self, kind: str, keys: list[str], embeddings: torch.Tensor) -> None:
        """Store new embeddings [n, D] (one shard file, written atomically); counted in `stats`."""
        if not keys:
            return
        embeddings = embeddings.detach().float().cpu()
        self._write_shard(kind, list(keys), embeddings)
        self._rows[kind].update(zip(keys, embeddings))
        if kind == "image":
            self.stats.images_embedded += len(keys)
        else:
            self.stats.texts_embedded += len(keys)
