"""Token ids of a training text view built from its record's chunk ids, tokenised once per record.

A view (`chunk_windows`: the chunks from one on, wrapping round, joined by spaces; or one chunk alone) used to
be tokenised in full for every sample, every epoch. `WindowTokens` tokenises each record's chunks once (lazily,
in the process that first needs them: each loader worker keeps its own cache) and builds a view's ids by
concatenating chunk ids, adding the tokenizer's own special tokens and truncating as the tokenizer does.

That equals tokenising the joined text only for a tokenizer that never lets a token span the space between two
chunks. The rule: CLIP's BPE (`CLIPTokenizer`) qualifies (its pre-tokenizer cuts lower-cased text into words and
punctuation runs and drops the spaces; BPE merges only within a piece). Byte-level BPE (the space belongs to the
next word's first token) and SentencePiece-style tokenizers such as Llama's (spaces become "▁" inside one piece,
so nothing keeps a merge from crossing them) are not guaranteed to, so they are not used even where the data
happens to agree. `for_records` also checks, id for id, every view of the first records against the tokenizer,
so a CLIP tokenizer with other settings (a changed tokenizer.json) is caught. Where either fails, training
tokenises texts per sample, as before, and says so once on stderr. Truncation keeps the start (or, with the
tokenizer's truncation_side "left", the end) of the content and always the special tokens, as the tokenizer's.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from itertools import islice
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from transformers import CLIPTokenizer

from animatch.data.text import chunk_windows

CHECKED_RECORDS = 64  # records whose every view is compared with the tokenizer when the dataset is built
_PROBE = "hair"  # a word the tokenizer keeps as content: where its ids sit tells the special tokens around them


class WindowTokens:
    """Ids of view k of record i: with `window`, chunks k, k+1, ... wrapping round (`chunk_windows`' view k);
    otherwise chunk k alone. Each record's chunk ids are cached as one int32 array
    [n, start_0 .. start_{n-1}, ids of chunk 0, ids of chunk 1, ...] (one object per record, ~4 bytes a token)."""

    def __init__(self, tokenizer: Any, max_length: int, *, window: bool):
        self.window = window
        # Chunks are encoded by a private copy of the tokenizer's Rust backend, without truncation or padding: ~30%
        # cheaper than the tokenizer's call (which leaves its truncation and padding set on its backend).
        self.encoder = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.encoder.no_truncation()
        self.encoder.no_padding()
        with_special = tokenizer(_PROBE, verbose=False)["input_ids"]
        content = tokenizer(_PROBE, add_special_tokens=False, verbose=False)["input_ids"]
        at = next((n for n in range(len(with_special) - len(content) + 1)
                   if with_special[n:n + len(content)] == content), None)
        if not content or at is None:
            raise ValueError(f"cannot place {type(tokenizer).__name__}'s special tokens around the text")
        self.prefix = np.array(with_special[:at], dtype=np.int32)
        self.suffix = np.array(with_special[at + len(content):], dtype=np.int32)
        self.budget = max_length - len(self.prefix) - len(self.suffix)  # content tokens kept by truncation
        self.keep_end = tokenizer.truncation_side == "left"
        self._cache: dict[int, np.ndarray] = {}

    @classmethod
    def for_records(cls, tokenizer: Any, max_length: int, chunk_lists: Iterable[list[str]], *,
                    window: bool) -> WindowTokens | None:
        """A `WindowTokens` where its ids are the tokenizer's (the rule above, and every view of the first
        `CHECKED_RECORDS` of the records, given by their chunks in dataset order, agrees); else None, after one
        line on stderr saying why."""
        reason = None
        if not isinstance(tokenizer, CLIPTokenizer):
            reason = f"{type(tokenizer).__name__} is not CLIP's BPE, where joined chunk ids are exact"
        else:
            built = cls(tokenizer, max_length, window=window)
            for i, chunks in enumerate(islice(chunk_lists, CHECKED_RECORDS)):
                views = chunk_windows(chunks) if window else chunks
                for k, text in enumerate(views):
                    expected = tokenizer(text, truncation=True, max_length=max_length, verbose=False)["input_ids"]
                    if built.ids(i, chunks, k).tolist() != expected:
                        reason = f"record {i}'s view {k} tokenised in full differs from its chunks' ids joined"
                        break
                if reason:
                    break
        if reason is None:
            return built
        print(f"text tokens: tokenising every sampled text in full ({reason})", file=sys.stderr)
        return None

    def ids(self, i: int, chunks: list[str], k: int) -> np.ndarray:
        """Token ids (int32, special tokens included, at most `max_length`) of view k of record i, whose
        chunks are `chunks` (tokenised on the record's first call, then read from the cache)."""
        packed = self._cache.get(i)
        if packed is None:
            packed = self._cache[i] = self._pack(chunks)
        n = int(packed[0])
        ids = packed[1 + n:]
        start = int(packed[1 + k])
        if self.window:
            content = np.concatenate((ids[start:], ids[:start]))
        else:
            content = ids[start:int(packed[2 + k])] if k + 1 < n else ids[start:]
        if len(content) > self.budget:
            content = content[len(content) - self.budget:] if self.keep_end else content[:self.budget]
        return np.concatenate((self.prefix, content, self.suffix))

    def _pack(self, chunks: list[str]) -> np.ndarray:
        # one call per chunk: encode_batch goes to the tokenizer's thread pool, which in a loader worker competes
        # with the other workers for the cores
        pieces = [self.encoder.encode(c, add_special_tokens=False).ids for c in chunks]
        starts = np.cumsum([0] + [len(p) for p in pieces[:-1]])
        return np.concatenate(([len(pieces)], starts, *pieces)).astype(np.int32)
