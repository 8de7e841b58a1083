"""Every setting of every job, with its default and help text: the single source of truth.

Each `animatch` subcommand has one dataclass here. The CLI builds its options from the fields (name,
type, default, `help`, `choices`, whether a path must exist), so `animatch <cmd> --help` always matches
the code, and a YAML config file (`--config`) may set any field, with command-line options on top. Library
functions take these dataclasses, so the Python API and the CLI share defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
DEFAULT_LLAVA = "llava-hf/llava-1.5-7b-hf"
TINY_PRESETS = ("clip-tiny", "clip-small", "llava-tiny")


def opt(default: Any = None, help: str = "", *, required: bool = False, choices: tuple | None = None,
        exists: str | None = None, positional: bool = False, nargs: str | None = None) -> Any:
    """A config field. `exists` is "dir", "file" or "path": the CLI checks it before running."""
    meta = {"help": help, "required": required, "choices": choices, "exists": exists,
            "positional": positional, "nargs": nargs}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------------------------------------- data
@dataclass
class SynthConfig:
    """Draw a synthetic persona dataset in the AniPersonaCaps layout."""
    out: str = opt(help="output dataset root (metadata.jsonl + images/)", required=True)
    n: int = opt(3000, "number of characters")
    seed: int = opt(0, "random seed; the same seed gives byte-identical output")
    image_size: int = opt(128, "image width in pixels (height is 1.5x, portrait like the real data)")
    characters_per_title: int = opt(12, "mean number of characters per title (anime)")
    workers: int = opt(0, "drawing processes (0: one per CPU core)")


@dataclass
class PrepareConfig:
    """Clean, validate, deduplicate, chunk and split a dataset root (the reference optimized_metadata.py)."""
    data: str = opt(help="dataset root holding metadata.jsonl and the images", required=True, exists="dir")
    out: str = opt(help="output dir for optimized_metadata.jsonl, train/val/test.jsonl, prepare_report.json",
                   required=True)
    metadata: str = opt("metadata.jsonl", "metadata file name, relative to --data")
    val_fraction: float = opt(0.05, "fraction of titles in the validation split")
    test_fraction: float = opt(0.05, "fraction of titles in the test split")
    split_seed: int = opt(0, "salt of the title hash that assigns splits")
    min_appearance_chars: int = opt(20, "appearance texts shorter than this (after cleaning) are dropped")
    chunk_tokens: int = opt(77, "max CLIP tokens per appearance chunk, start and end tokens included")
    tokenizer: Optional[str] = opt(None, "CLIP tokenizer (hub id or dir) for exact chunk lengths; "
                                         "default: a conservative offline estimate")
    placeholder_min_characters: int = opt(3, "an image shared by at least this many characters of different "
                                             "titles is a placeholder and dropped")
    max_image_pixels: int = opt(89_478_485, "images above this many pixels are rejected (decompression bombs)")
    check_images: bool = opt(True, "decode every image once to validate it")
    workers: int = opt(0, "image-checking processes (0: one per CPU core)")


@dataclass
class DownloadConfig:
    """Fetch AniPersonaCaps from the Hugging Face Hub (metadata + only the images needed)."""
    out: str = opt(help="output dataset root", required=True)
    repo: str = opt("mrzjy/AniPersonaCaps", "dataset repository on the Hub")
    limit: Optional[int] = opt(None, "keep only the first N records (and download only their images)")
    revision: Optional[str] = opt(None, "git revision of the dataset repository")


# -------------------------------------------------------------------------------------------- models
@dataclass
class InitModelConfig:
    """Build a tiny randomly initialised checkpoint in exactly the Hub layout, offline."""
    preset: str = opt(help="which checkpoint", required=True, choices=TINY_PRESETS, positional=True)
    out: str = opt(help="output directory", required=True)
    vision_tower: Optional[str] = opt(None, "llava-tiny only: take the vision tower from this CLIP "
                                            "checkpoint (dir or hub id)")
    seed: int = opt(0, "seed of the random initialisation")


# ---------------------------------------------------------------------------------------------- CLIP
@dataclass
class TrainConfig:
    """Fine-tune CLIP contrastively (the reference recipe), on one CPU, one GPU or many via accelerate launch."""
    data: str = opt(help="dataset root (images are read relative to it)", required=True, exists="dir")
    split_dir: str = opt(help="output dir of `animatch prepare` (train.jsonl, val.jsonl)", required=True,
                         exists="dir")
    out: str = opt(help="run dir: best/, last/, metrics.jsonl, config.yaml, report.md", required=True)
    model: str = opt(DEFAULT_CLIP, "CLIP checkpoint to start from: hub id or local dir")
    epochs: int = opt(10, "passes over the training split")
    max_steps: Optional[int] = opt(None, "stop after this many optimizer steps (overrides --epochs)")
    batch_size: int = opt(64, "pairs per process per micro-batch")
    accum_steps: int = opt(1, "micro-batches per optimizer step; the contrastive loss is exact over all of them")
    lr: float = opt(1e-5, "peak learning rate (AdamW)")
    adam_eps: float = opt(1e-6, "AdamW epsilon (CLIP's 1e-6; from scratch 1e-8 did better, docs/BENCHMARKS.md)")
    weight_decay: float = opt(0.05, "AdamW weight decay (never on biases, norms or logit_scale)")
    eta_min: float = opt(1e-6, "final learning rate of the cosine schedule")
    warmup_steps: int = opt(0, "linear warmup steps before the decay")
    lr_schedule: str = opt("cosine", "cosine: anneal to eta_min over the whole run (the reference); wsd: warmup, "
                                     "hold the peak, decay linearly over the last --decay-fraction",
                           choices=("cosine", "wsd"))
    decay_fraction: float = opt(0.3, "wsd: fraction of the steps spent decaying to eta_min")
    max_grad_norm: float = opt(1.0, "gradient clipping max norm (0 disables)")
    mixed_precision: str = opt("auto", "autocast dtype; auto: bf16 on GPUs that have it, else fp16 (with a "
                                       "GradScaler) on GPU, no on CPU", choices=("auto", "no", "fp16", "bf16"))
    logit_scale_init: Optional[float] = opt(None, "set the temperature scale (e.g. 16: logit_scale = ln 16); "
                                                  "default: keep the checkpoint's")
    lock_image: bool = opt(False, "freeze the vision tower and its projection")
    lock_text: bool = opt(False, "freeze the text tower and its projection")
    gather_with_grad: bool = opt(True, "global negatives: gather features from all processes with gradients")
    crop_scale: float = opt(0.8, "smallest area fraction of the random resized crop (training only)")
    hflip: bool = opt(True, "random horizontal flip (training only)")
    patch_dropout: float = opt(0.0, "share of image patches dropped at random in each training forward (FLIP, "
                                    "open_clip's patch_dropout): cheaper steps; evaluation sees all patches")
    text_buckets: int = opt(1, "run the text tower on this many length-sorted groups, each padded to its own "
                               "longest text: fewer padding tokens, same embeddings (helps on CPU; 1 on GPU)")
    attn_implementation: str = opt("sdpa", "attention kernel (eager ran faster for clip-tiny on CPU)",
                                   choices=("sdpa", "eager", "flash_attention_2"))
    text_sampling: str = opt("window", "training text of a pair: from a random appearance chunk on, as much as "
                                       "fits in 77 tokens (window), or that chunk alone (chunk)",
                             choices=("window", "chunk"))
    seed: int = opt(42, "seed of shuffling, augmentation, chunk sampling and initialisation")
    workers: int = opt(2, "data-loading worker processes per training process")
    eval_every: Optional[int] = opt(None, "validate every N optimizer steps (default: at the end of every epoch)")
    eval_batch_size: int = opt(128, "batch size when embedding the validation split")
    max_eval_items: Optional[int] = opt(None, "validate on at most this many characters (default: all)")
    log_every: int = opt(10, "write metrics every N optimizer steps")
    report_to: str = opt("tensorboard", "experiment tracker", choices=("tensorboard", "wandb", "none"))
    max_bad_steps: int = opt(5, "stop after this many consecutive non-finite losses (each one is skipped)")
    resume: bool = opt(False, "continue from RUN_DIR/last (model, optimizer, schedule, scaler, RNG, data position)")


@dataclass
class EvalConfig:
    """Evaluate a CLIP model on a split: accuracy, Recall@K both ways, cosine gap, BLEU/ROUGE of retrieved text."""
    data: str = opt(help="dataset root (images are read relative to it)", required=True, exists="dir")
    split_dir: str = opt(help="output dir of `animatch prepare`", required=True, exists="dir")
    out: str = opt(help="output dir: eval.json, eval.md, similarity_hist.png, recall_at_k.png", required=True)
    model: str = opt(DEFAULT_CLIP, "CLIP model to evaluate: hub id, local dir or a run's best/")
    baseline: Optional[str] = opt(None, "a second model evaluated side by side (e.g. the zero-shot checkpoint)")
    split: str = opt("test", "which split to evaluate", choices=("train", "val", "test"))
    batch_size: int = opt(128, "embedding batch size")
    in_batch_size: int = opt(64, "batch size of the in-batch accuracy (the reference's training batch)")
    max_items: Optional[int] = opt(None, "evaluate at most this many characters (default: all)")
    workers: int = opt(2, "image-decoding worker processes")


# ------------------------------------------------------------------------------ match, index, search
DEFAULT_EMBEDDING_CACHE = "~/.cache/animatch/embeddings"


@dataclass
class MatchConfig:
    """Rank candidate characters (or free texts) for every image in a folder; write matches and heatmaps."""
    images: str = opt(help="folder of images (searched recursively; other files are ignored)", required=True,
                      exists="dir")
    model: str = opt(help="CLIP model: hub id, local dir or a training run's best/", required=True)
    out: str = opt(help="output dir: matches.jsonl, matches.csv, heatmap*.png, summary.json, report.md",
                   required=True)
    metadata: Optional[str] = opt(None, "candidates: one per character of this (optimized_)metadata.jsonl",
                                  exists="file")
    texts: Optional[str] = opt(None, "candidates: free texts, one per line (instead of --metadata)", exists="file")
    top_k: int = opt(5, "matches kept per image")
    batch_size: int = opt(64, "embedding batch size")
    workers: int = opt(2, "image-decoding worker processes (0: decode in the main process)")
    device: Optional[str] = opt(None, "torch device, e.g. cuda:1 (unset: the process's accelerator, else CPU)")
    cache: bool = opt(True, "reuse and store embeddings in --cache-dir")
    cache_dir: str = opt(DEFAULT_EMBEDDING_CACHE, "embedding cache root (one sub-dir per model)")
    heatmap_rows: int = opt(40, "images per heatmap page")
    heatmap_cols: int = opt(30, "candidates per heatmap page (the best-scoring ones when there are more)")


@dataclass
class IndexConfig:
    """Build a search index (faiss) of a dataset's image and appearance-text embeddings."""
    data: str = opt(help="dataset root (metadata.jsonl; images relative to it)", required=True, exists="dir")
    model: str = opt(help="CLIP model: hub id, local dir or a training run's best/", required=True)
    out: str = opt(help="index dir to write (replaced atomically)", required=True)
    split_dir: Optional[str] = opt(None, "output dir of `animatch prepare`: index its optimized_metadata.jsonl "
                                         "instead of cleaning DATA/metadata.jsonl", exists="dir")
    split: Optional[str] = opt(None, "with --split-dir: index only this split", choices=("train", "val", "test"))
    batch_size: int = opt(64, "embedding batch size")
    workers: int = opt(2, "image-decoding worker processes (0: decode in the main process)")
    device: Optional[str] = opt(None, "torch device, e.g. cuda:1 (unset: CUDA when available, else CPU)")
    approximate_above: int = opt(50_000, "use an approximate HNSW index above this many vectors (exact inner "
                                         "product below; exact search over 100k vectors takes ~50 ms per query "
                                         "on 2 CPU cores)")
    hnsw_neighbors: int = opt(32, "HNSW graph degree (approximate index only)")
    cache: bool = opt(True, "reuse and store embeddings in --cache-dir")
    cache_dir: str = opt(DEFAULT_EMBEDDING_CACHE, "embedding cache root (one sub-dir per model)")


@dataclass
class SearchConfig:
    """Query an index: characters whose images match a text, or descriptions matching an image."""
    index: str = opt(help="index dir written by `animatch index`", required=True, exists="dir", positional=True)
    query: Optional[str] = opt(None, "text query, e.g. \"silver hair elf with twin tails\"", positional=True)
    image: Optional[str] = opt(None, "image query: find the character descriptions that match this image",
                               exists="file")
    k: int = opt(10, "number of results")
    json: bool = opt(False, "print results as JSON")
    device: Optional[str] = opt(None, "torch device, e.g. cuda:1 (unset: CUDA when available, else CPU)")


# --------------------------------------------------------------------------------------------- judge
@dataclass
class JudgeConfig:
    """Two-stage LLaVA judge: describe the image, then score how well an English text describes it (1-10)."""
    image: Optional[str] = opt(None, "single mode: the character image", exists="file")
    text: Optional[str] = opt(None, "single mode: the English text to judge against the image")
    pairs: Optional[str] = opt(None, "batch mode: JSONL, one {\"image\": path, \"text\": ...} per line (other "
                                     "fields are kept under \"fields\" in the results)", exists="file")
    out: Optional[str] = opt(None, "batch mode: results JSONL (resumable: judged pairs are skipped on rerun); "
                                   "summary and report go beside it")
    image_root: Optional[str] = opt(None, "batch mode: relative image paths are read from here (unset: the "
                                          "pairs file's directory)", exists="dir")
    model: str = opt(DEFAULT_LLAVA, "LLaVA checkpoint: hub id or local dir")
    adapter: Optional[str] = opt(None, "LoRA adapter dir from `animatch judge-train` (optional "
                                       "mm_projector.safetensors inside)", exists="dir")
    threshold: float = opt(6, "a score at or above this is a match")
    json: bool = opt(False, "single mode: print the result as JSON")
    batch_size: int = opt(8, "batch mode: pairs per batched generation")
    num_beams: int = opt(1, "stage 1 beam search width (1: greedy); beams > 1 disable the stage-2 prefix reuse")
    max_description_tokens: int = opt(256, "stage 1: max new tokens of the description")
    max_analysis_tokens: int = opt(200, "stage 2: max new tokens of the score and analysis")
    temperature: float = opt(0.3, "stage 2 sampling temperature (0: greedy)")
    top_p: float = opt(0.9, "stage 2 nucleus sampling top-p")
    seed: int = opt(0, "stage 2 sampling seed")
    # opt() turns a list default into a default_factory, so instances never share it.
    retry_temperatures: list[float] = opt(
        [0.6, 0.9], "stage 2 retries at these temperatures while the score cannot be parsed; then the result is "
                    "'unparsed'")
    reuse_prefix: bool = opt(True, "stage 2 reuses stage 1's KV cache (image + prompt + description)")
    device: Optional[str] = opt(None, "torch device, e.g. cuda:1 (unset: CUDA when available, else CPU)")
    dtype: Optional[str] = opt(None, "weights dtype (unset: float16 on CUDA, float32 on CPU)",
                               choices=("float32", "float16", "bfloat16"))
    load_in_4bit: bool = opt(False, "quantise to 4 bits with bitsandbytes (CUDA only)")
    attn_implementation: str = opt("sdpa", "attention kernel", choices=("sdpa", "eager", "flash_attention_2"))
    max_image_pixels: int = opt(89_478_485, "images above this many pixels are rejected (decompression bombs)")


# ---------------------------------------------------------------------------------------------- demo
@dataclass
class DemoConfig:
    """The whole pipeline on the embedded synthetic dataset, offline: data, CLIP, match, search, judge."""
    out: str = opt("runs/demo", "output dir (replaced): every artefact and REPORT.md")
    quick: bool = opt(False, "smaller data and fewer steps (about 90 s; the CI smoke test)")
    seed: int = opt(0, "seed of the dataset and of training")


# ---------------------------------------------------------------------------------- judge fine-tuning
LORA_TARGET_MODULES = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


@dataclass
class JudgeTrainConfig:
    """Fine-tune the LLaVA judge (LoRA, QLoRA or full) on both stages: describe the image, score a text."""
    data: str = opt(help="dataset root (images are read relative to it)", required=True, exists="dir")
    split_dir: str = opt(help="output dir of `animatch prepare` (train.jsonl, val.jsonl)", required=True,
                         exists="dir")
    out: str = opt(help="run dir: adapter/ (or model/ for --method full), last/, metrics.jsonl, report.md",
                   required=True)
    model: str = opt(DEFAULT_LLAVA, "LLaVA checkpoint to start from: hub id or local dir")
    method: str = opt("lora", "lora: LoRA on the language model + full projector; qlora: the same on a 4-bit base "
                              "(CUDA + bitsandbytes); full: language model + projector", choices=("lora", "qlora",
                                                                                                  "full"))
    epochs: int = opt(1, "passes over the training examples (regenerated every epoch)")
    max_steps: Optional[int] = opt(None, "stop after this many optimizer steps (overrides --epochs)")
    batch_size: int = opt(4, "examples per process per micro-batch")
    accum_steps: int = opt(4, "micro-batches per optimizer step")
    lr: float = opt(2e-4, "peak learning rate of the LoRA weights (full: of the language model)")
    projector_lr: float = opt(2e-5, "peak learning rate of the multi-modal projector")
    weight_decay: float = opt(0.0, "AdamW weight decay (never on biases and norms)")
    scheduler: str = opt("cosine", "learning-rate schedule after warmup",
                         choices=("cosine", "linear", "constant_with_warmup"))
    warmup_ratio: float = opt(0.03, "fraction of the steps spent in linear warmup")
    max_grad_norm: float = opt(1.0, "gradient clipping max norm (0 disables)")
    lora_r: int = opt(128, "LoRA rank")
    lora_alpha: int = opt(256, "LoRA alpha (scale alpha / r)")
    lora_dropout: float = opt(0.05, "LoRA dropout")
    lora_target_modules: str = opt(LORA_TARGET_MODULES, "regex of the LoRA-wrapped linear layers (full name "
                                                        "match); the default keeps the vision tower untouched")
    mixed_precision: str = opt("auto", "autocast dtype (and weights dtype of the frozen base under lora/qlora); "
                                       "auto: bf16 on GPUs that have it, else fp16 on GPU, no on CPU",
                               choices=("auto", "no", "fp16", "bf16"))
    gradient_checkpointing: bool = opt(False, "recompute activations in the backward pass (less memory, ~30% "
                                              "slower)")
    attn_implementation: str = opt("sdpa", "attention kernel", choices=("sdpa", "eager", "flash_attention_2"))
    description_tokens: int = opt(192, "stage-1 target: appearance chunks joined up to this many tokens")
    candidate_tokens: int = opt(128, "stage-2 candidate texts are cut to whole sentences within this many tokens")
    description_examples: int = opt(1, "description (stage-1) examples per character per epoch")
    description_style: str = opt("text", "stage-1 target: text (the appearance chunks) or keywords (the appearance "
                                         "keywords of evaluate.text.extract_keywords, comma-separated)",
                                 choices=("text", "keywords"))
    describe_steps: int = opt(0, "optimizer steps on description examples only before the stage-2 examples join")
    stage2_context: str = opt("reference", "the description in a stage-2 example's context: reference (made from "
                                           "the appearance text) or own (the model's own greedy description, "
                                           "written after --describe-steps, as at inference)",
                              choices=("reference", "own"))
    score_loss_weight: float = opt(1.0, "weight in the loss of a stage-2 answer's score digits (every other "
                                        "answer token weighs 1): the score is the decision, one token of many")
    own_descriptions: Optional[int] = opt(None, "stage2-context own: describe this many training characters "
                                                "(seeded draw; default all); stage-2 examples use only them")
    negatives_per_positive: int = opt(1, "stage-2 negatives (another character's appearance) per positive")
    same_title_negatives: float = opt(1.0, "probability that a negative comes from the same title (when the "
                                           "title has another character)")
    personality_negatives: float = opt(0.1, "probability per character of an extra stage-2 negative whose text "
                                            "is its personality (a text that does not describe the looks)")
    positive_score: int = opt(9, "stage-2 target score of a positive")
    negative_score: int = opt(2, "stage-2 target score of a negative")
    max_length: int = opt(2048, "examples longer than this many tokens are skipped (and counted)")
    seed: int = opt(42, "seed of example sampling, shuffling and LoRA initialisation")
    workers: int = opt(2, "data-loading worker processes per training process")
    log_every: int = opt(10, "write metrics every N optimizer steps")
    save_every: Optional[int] = opt(None, "write the resume checkpoint last/ every N optimizer steps (default: "
                                          "at the end of every epoch)")
    eval_every: Optional[int] = opt(None, "validation loss every N optimizer steps (default: end of each epoch)")
    max_eval_examples: int = opt(64, "validation loss over at most this many val-split examples")
    report_to: str = opt("tensorboard", "experiment tracker", choices=("tensorboard", "wandb", "none"))
    max_bad_steps: int = opt(5, "stop after this many consecutive non-finite losses (each one is skipped)")
    resume: bool = opt(False, "continue from RUN_DIR/last (weights, optimizer, schedule, RNG, data position)")
    merge: bool = opt(False, "lora/qlora: also write RUN_DIR/merged, a full checkpoint with the adapter merged")


@dataclass
class JudgeEvalConfig:
    """Evaluate the judge on test-split pairs: verdict accuracy + ROC-AUC, keyword Recall@K, BLEU/ROUGE, cosine."""
    data: str = opt(help="dataset root (images are read relative to it)", required=True, exists="dir")
    split_dir: str = opt(help="output dir of `animatch prepare`", required=True, exists="dir")
    out: str = opt(help="output dir: judge_eval.json, judge_eval.md, score_hist.png, pairs_<model>.jsonl",
                   required=True)
    model: str = opt(DEFAULT_LLAVA, "LLaVA checkpoint: hub id or local dir")
    adapter: Optional[str] = opt(None, "adapter dir from `animatch judge-train`", exists="dir")
    baseline: Optional[str] = opt(None, "a second checkpoint evaluated side by side (e.g. the base model)")
    baseline_adapter: Optional[str] = opt(None, "adapter of the baseline", exists="dir")
    split: str = opt("test", "which split to evaluate", choices=("train", "val", "test"))
    groups: int = opt(1, "divide the characters into N groups (negatives drawn within a group); per-group and "
                         "overall figures")
    max_items: Optional[int] = opt(None, "evaluate at most this many characters (default: all)")
    k: int = opt(5, "keyword Recall@K: among the first K keywords of the description")
    candidate_tokens: int = opt(128, "candidate texts are the reference appearance cut to whole sentences within "
                                     "this many tokens (as in judge-train)")
    threshold: float = opt(6, "a score at or above this is a match")
    batch_size: int = opt(8, "pairs per batched generation")
    num_beams: int = opt(1, "stage 1 beam search width (1: greedy)")
    max_description_tokens: int = opt(256, "stage 1: max new tokens of the description")
    max_analysis_tokens: int = opt(64, "stage 2: max new tokens of the score and analysis")
    temperature: float = opt(0.3, "stage 2 sampling temperature (0: greedy)")
    top_p: float = opt(0.9, "stage 2 nucleus sampling top-p")
    seed: int = opt(0, "seed of the negative sampling, the groups and stage-2 sampling")
    sentence_model: str = opt("sentence-transformers/all-MiniLM-L6-v2", "sentence-embedding model of the "
                                                                         "semantic cosine")
    semantic: bool = opt(True, "compute the semantic cosine (loads the sentence model)")
    device: Optional[str] = opt(None, "torch device, e.g. cuda:1 (unset: CUDA when available, else CPU)")
    dtype: Optional[str] = opt(None, "weights dtype (unset: float16 on CUDA, float32 on CPU)",
                               choices=("float32", "float16", "bfloat16"))
    load_in_4bit: bool = opt(False, "quantise to 4 bits with bitsandbytes (CUDA only)")


# --------------------------------------------------------------------------------------------- audit
@dataclass
class AuditConfig:
    """Find mismatched image-text pairs: CLIP scores every pair, an optional LLaVA judge verifies the flagged ones."""
    data: str = opt(help="dataset root (images are read relative to it)", required=True, exists="dir")
    model: str = opt(help="CLIP model: hub id, local dir or a training run's best/", required=True)
    out: str = opt(help="output dir: audit.jsonl, flagged.html, clean_metadata.jsonl, summary.json, report.md",
                   required=True)
    split_dir: Optional[str] = opt(None, "output dir of `animatch prepare`: audit its optimized_metadata.jsonl and "
                                         "calibrate on its val split (unset: DATA/--metadata, calibrated on all "
                                         "pairs)", exists="dir")
    metadata: str = opt("metadata.jsonl", "without --split-dir: the metadata file, relative to --data (or absolute)")
    threshold: Optional[float] = opt(None, "flag a pair whose fit score (mean of its two cosine z-scores) is below "
                                           "this (unset: calibrated, see report.md)")
    sentence_threshold: Optional[float] = opt(None, "a sentence does not fit when its cosine deficit is above this "
                                                    "(unset: calibrated, see --sentence-fpr)")
    sentence_fpr: float = opt(0.02, "calibration: share of the calibration pairs' own sentences that may be judged "
                                    "non-fitting (the sentence threshold is that quantile of their deficits)")
    trim_sentences: bool = opt(False, "clean_metadata.jsonl: remove non-fitting sentences instead of dropping whole "
                                      "pairs (a flagged pair is kept only if its trimmed text passes)")
    calibration_swaps: int = opt(5, "simulated swaps per calibration pair (texts moved to other images)")
    min_calibration_pairs: int = opt(20, "calibrate on all pairs when the val split has fewer than this")
    reference_images: int = opt(4096, "images (a seeded sample) that each sentence is compared against")
    seed: int = opt(0, "seed of the calibration swaps, the reference sample and the judge's unflagged sample")
    judge_model: Optional[str] = opt(None, "LLaVA checkpoint (hub id or dir): verify flagged pairs with the "
                                           "two-stage judge")
    adapter: Optional[str] = opt(None, "LoRA adapter dir of the judge", exists="dir")
    judge_threshold: float = opt(6, "a judge score at or above this is a match")
    judge_sample: int = opt(20, "unflagged pairs (random) also judged, to estimate what CLIP misses")
    judge_max_pairs: Optional[int] = opt(None, "judge at most this many flagged pairs (the lowest fit first)")
    judge_clears: bool = opt(True, "a flagged pair the judge scores as a match is no longer flagged")
    judge_batch_size: int = opt(4, "pairs per batched judge generation")
    judge_max_description_tokens: int = opt(256, "judge stage 1: max new tokens of the image description")
    judge_max_analysis_tokens: int = opt(200, "judge stage 2: max new tokens of the score and analysis")
    batch_size: int = opt(64, "embedding batch size")
    workers: int = opt(2, "image-decoding worker processes (0: decode in the main process)")
    device: Optional[str] = opt(None, "torch device, e.g. cuda:1 (unset: the process's accelerator, else CPU)")
    cache: bool = opt(True, "reuse and store embeddings in --cache-dir")
    cache_dir: str = opt(DEFAULT_EMBEDDING_CACHE, "embedding cache root (one sub-dir per model)")
    html_max_items: int = opt(300, "flagged.html shows at most this many pairs per section (all are in audit.jsonl)")
    thumbnail_size: int = opt(160, "longest side of the thumbnails embedded in flagged.html, in pixels")


# --------------------------------------------------------------------------------------------- serve
@dataclass
class ServeConfig:
    """Web app + JSON API: search, match and judge in the browser (FastAPI; the API is described at /docs)."""
    index: str = opt(help="index dir written by `animatch index`", required=True, exists="dir")
    model: Optional[str] = opt(None, "CLIP model (hub id or dir) instead of the one recorded in the index; it "
                                     "must give vectors of the index's dimension")
    judge_model: Optional[str] = opt(None, "LLaVA checkpoint (hub id or dir) of the Judge tab (unset: the tab "
                                           "explains how to enable it)")
    adapter: Optional[str] = opt(None, "LoRA adapter dir of the judge (from `animatch judge-train`)", exists="dir")
    host: str = opt("127.0.0.1", "address to listen on (0.0.0.0 exposes the app to the whole network)")
    port: int = opt(7860, "port to listen on (0: any free port)")
    device: Optional[str] = opt(None, "torch device, e.g. cuda:1 (unset: CUDA when available, else CPU)")
    max_upload_mb: float = opt(10.0, "largest request body in MiB (all uploaded images together); larger: HTTP 413")
    max_image_pixels: int = opt(89_478_485, "uploaded images above this many pixels are refused (decompression "
                                            "bombs)")
    max_k: int = opt(50, "most results one search may ask for")
    max_match_images: int = opt(16, "most images in one match request")
    max_candidates: int = opt(200, "most candidate texts and characters in one match request")
    judge_queue: int = opt(8, "judge requests that may wait behind the running one; more: HTTP 429")
    cascade_k: int = opt(5, "judge cascade: CLIP candidates re-scored by the judge (the most a request may ask)")
    judge_batch_size: int = opt(4, "judge cascade: pairs per batched generation (progress is reported per batch)")
    judge_threshold: float = opt(6, "a judge score at or above this is a match")
    judge_max_description_tokens: int = opt(256, "judge stage 1: max new tokens of the image description")
    judge_max_analysis_tokens: int = opt(200, "judge stage 2: max new tokens of the score and analysis")
