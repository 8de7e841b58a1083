"""Offline, byte-for-byte reproducible tokenizers for the tiny checkpoints: a CLIP BPE and a Llama BPE.

Both are trained with the `tokenizers` BPE trainer on synthetic persona text plus a general English word
list (`english_words.txt`, package data), then their vocabularies are rebuilt in a fixed order (special
tokens, the base alphabet sorted, then merge results in merge order), because the ids the trainer hands out
follow hash-map order and differ between processes. The results are ordinary `CLIPTokenizer` / `LlamaTokenizer` objects
(CLIP: lowercasing, `</w>` word ends, start/end tokens; Llama: metaspace, byte fallback, `<s>`), saved
with `save_pretrained` like any Hub tokenizer.
"""

from __future__ import annotations

import json
import random
from importlib import resources

from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers

CLIP_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
LLAMA_SPECIALS = ("<unk>", "<s>", "</s>")
_WORD_END = 0xE000  # private-use offset spelling "c</w>" as one character while training the CLIP BPE
LLAMA_BYTES = tuple(f"<0x{i:02X}>" for i in range(256))


def english_words() -> tuple[str, ...]:
    """The word list shipped as english_words.txt, in its order (most frequent first)."""
    text = resources.files("animatch.models").joinpath("english_words.txt").read_text(encoding="utf-8")
    return tuple(word for line in text.splitlines() if not line.startswith("#") for word in line.split())


def training_corpus(n_records: int = 1500, seed: int = 0) -> list[str]:
    """Synthetic appearance/personality texts, attribute queries and Zipf-weighted English words."""
    from animatch.data.synth_plan import plan_records
    from animatch.data.synth_text import query_text

    texts = []
    for record in plan_records(n_records, seed):
        texts += [record["appearance"], record["personality"], record["title"] + " " + record["character"],
                  query_text(record["attributes"])]
    rng = random.Random(seed)
    weighted = [w for rank, w in enumerate(english_words()) for _ in range(1 + 2000 // (rank + 100))]
    rng.shuffle(weighted)
    texts += [" ".join(weighted[i:i + 40]) for i in range(0, len(weighted), 40)]
    return texts


def _train_merges(tokenizer: Tokenizer, texts: list[str], vocab_size: int, **trainer_kw) -> list[tuple[str, str]]:
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[], **trainer_kw)
    tokenizer.train_from_iterator(texts, trainer)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]


def _word_end(c: str) -> str:
    return chr(_WORD_END + ord(c))


def _from_word_end(token: str) -> str:
    return token[:-1] + chr(ord(token[-1]) - _WORD_END) + "</w>" if ord(token[-1]) >= _WORD_END else token


def build_clip_tokenizer(vocab_size: int = 8192, texts: list[str] | None = None):
    """A `CLIPTokenizer` with exactly `vocab_size` tokens; the same inputs give the same files."""
    from transformers import CLIPTokenizer

    template = CLIPTokenizer().backend_tokenizer  # CLIP's normalizer and pre-tokenizer
    # The trainer's own `c</w>` symbols get hash-ordered ids, which reorders tied merges from run to run.
    # Spelling each `c</w>` as one private-use character puts it in the sorted initial alphabet instead.
    words = [" ".join(w[:-1] + _word_end(w[-1]) for w, _ in
                      template.pre_tokenizer.pre_tokenize_str(template.normalizer.normalize_str(t)))
             for t in texts or training_corpus()]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    trainee = Tokenizer(models.BPE())
    trainee.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    initial = alphabet + [_word_end(c) for c in alphabet]
    n_merges = vocab_size - len(initial) - len(CLIP_SPECIALS)
    trained = _train_merges(trainee, words, n_merges + len(initial), initial_alphabet=initial,
                            limit_alphabet=len(initial))
    merges = [(a, _from_word_end(b)) for a, b in trained[:n_merges]]
    tokens = [_from_word_end(t) for t in initial] + ["".join(m) for m in merges] + list(CLIP_SPECIALS)
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    if len(vocab) != vocab_size:
        raise ValueError(f"corpus too small for a {vocab_size}-token CLIP vocabulary ({len(vocab)})")
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_llama_tokenizer(vocab_size: int = 4096, texts: list[str] | None = None,
                          added: tuple[str, ...] = ("<image>", "<pad>")):
    """A `LlamaTokenizer` (byte fallback) with `vocab_size` tokens, the last ones being `added` specials."""
    from transformers import LlamaTokenizer

    texts = texts or training_corpus()
    trainee = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    # Split on words for training only; the saved tokenizer, like Llama's, runs on unsplit text.
    trainee.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        pre_tokenizers.Punctuation(), pre_tokenizers.Digits(individual_digits=True)])
    alphabet = sorted({c for text in texts for c in text.replace(" ", "▁")} | {"▁"})
    base = list(LLAMA_SPECIALS) + list(LLAMA_BYTES) + alphabet
    n_merges = vocab_size - len(base) - len(added)
    merges = _train_merges(trainee, texts, n_merges + len(alphabet) + 64, initial_alphabet=alphabet,
                           limit_alphabet=len(alphabet))
    tokens = list(dict.fromkeys(base + ["".join(m) for m in merges]))[:len(base) + n_merges]
    kept = set(tokens)
    merges = [m for m in merges if "".join(m) in kept][:n_merges]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) + len(added) != vocab_size:
        raise ValueError(f"corpus too small for a {vocab_size}-token Llama vocabulary ({len(vocab)})")
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, legacy=False, add_prefix_space=True,
                               add_bos_token=True, add_eos_token=False)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in added], special_tokens=True)
    tokenizer.pad_token = "<pad>"
    return tokenizer
