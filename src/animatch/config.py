"""Every option of every command: name, type, default, allowed values and help, declared once and checked once.

Options come in groups (dataclasses below: the dataset, the device, embedding, the training loop, the judge's
model and generation, ...). A command's options are a dataclass that inherits the groups it uses and adds its
own fields, so a name that several commands share is declared in one group and means one thing everywhere
(tests/test_config.py holds the few names whose meaning is the command's own, see `PER_COMMAND`).
`Options.__post_init__` checks every value (type, choices, range, and the command's `check()` across fields)
whether it comes from the command line, a YAML `--config` file or the Python API, and raises a one-line
`UserError`. This is the pattern of transformers' `HfArgumentParser` dataclasses (checks in `__post_init__`),
without importing transformers here: `animatch --help` must answer without torch. The CLI (`animatch.cli`)
builds its options from these fields.
"""

from __future__ import annotations

import functools
import math
import os
import re
import types
import typing
from dataclasses import Field, dataclass, field, fields
from typing import Any, Optional

from animatch.errors import UserError

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
DEFAULT_LLAVA = "llava-hf/llava-1.5-7b-hf"
DEFAULT_EMBEDDING_CACHE = "~/.cache/animatch/embeddings"
TINY_PRESETS = ("clip-tiny", "clip-small", "llava-tiny", "llava-minilm")
SPLITS = ("train", "val", "test")
ATTENTION = ("sdpa", "eager", "flash_attention_2")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
DTYPES = ("float32", "float16", "bfloat16")
TRACKERS = ("tensorboard", "wandb", "none")
LENGTH_GROUP_BATCHES = 16  # judge-train --group-by-length: batches whose examples are sorted by length together

# Ranges, as intervals: "[" and "]" include the end, "(" and ")" exclude it.
AT_LEAST_1 = "[1, inf)"
NOT_NEGATIVE = "[0, inf)"
POSITIVE = "(0, inf)"
PROBABILITY = "[0, 1]"
SEED = "[0, 4294967295]"  # numpy's seed range; torch and random take it too
SCORE = "[1, 10]"
DEVICE = (r"(cpu|mps|(cuda|xpu)(:\d+)?)", "a torch device such as cpu, cuda or cuda:1")


def opt(default: Any = None, help: str = "", *, required: bool = False, choices: tuple | None = None,
        bounds: str | None = None, pattern: tuple[str, str] | None = None, exists: str | None = None,
        positional: bool = False) -> Any:
    """An option. `bounds` is the allowed interval of a number, `pattern` (regex, what it means) the form of a
    string; `exists` ("dir" or "file") is checked when a command starts (`Options.missing_path`)."""
    meta = {"help": help, "required": required, "choices": choices, "bounds": bounds, "pattern": pattern,
            "exists": exists, "positional": positional}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def flag(f: Field) -> str:
    """How the user spells option `f`: --split-dir, or QUERY for a positional."""
    return f.name.upper() if f.metadata.get("positional") else "--" + f.name.replace("_", "-")


def field_type(tp: Any) -> tuple[type, bool, bool]:
    """(scalar type, is_list, may_be_none) of a resolved field annotation."""
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        optional = type(None) in args
        tp = next(a for a in args if a is not type(None))
    if typing.get_origin(tp) is list:
        return typing.get_args(tp)[0], True, optional
    return tp, False, optional


@functools.cache
def resolved_types(cls: type) -> dict[str, tuple[type, bool, bool]]:
    """`field_type` of every field of `cls` (annotations are strings under `from __future__`)."""
    hints = typing.get_type_hints(cls)
    return {f.name: field_type(hints[f.name]) for f in fields(cls)}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _outside(value: float, bounds: str) -> str | None:
    """Why `value` is outside interval `bounds`, or None when inside."""
    low, high = (float(x) for x in bounds[1:-1].split(","))
    above_low = low < value if bounds[0] == "(" else low <= value
    below_high = value < high if bounds[-1] == ")" else value <= high
    if above_low and below_high:
        return None
    if high == math.inf:
        return f"must be {'above' if bounds[0] == '(' else 'at least'} {low:g}"
    return f"must be in {bounds}"


_KIND = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _typed(value: Any, tp: type, name: str) -> Any:
    """`value` as type `tp`, refusing what YAML or a Python caller may pass instead (a bool for an int, "no" for
    a bool, a list for a number). Ints are accepted for floats."""
    ok = isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise UserError(f"{name}: expected {_KIND[tp]}, got {_short(value)}")
    if tp is float and not math.isfinite(value):
        raise UserError(f"{name}: expected a finite number, got {value}")
    if tp is str and "\x00" in value:
        raise UserError(f"{name}: must not contain a NUL character")
    return value


def _checked(f: Field, value: Any, tp: type, name: str) -> Any:
    value = _typed(value, tp, name)
    meta = f.metadata
    if meta["choices"] and value not in meta["choices"]:
        raise UserError(f"{name}: {_short(value)} is not one of {', '.join(map(str, meta['choices']))}")
    if meta["bounds"] and (why := _outside(value, meta["bounds"])):
        raise UserError(f"{name} {why}, got {value:g}")
    if meta["pattern"] and not re.fullmatch(meta["pattern"][0], value):
        raise UserError(f"{name}: {_short(value)} is not {meta['pattern'][1]}")
    return value


@dataclass
class Options:
    """Base of every option group: checks each value on construction (and on `dataclasses.replace`)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            tp, is_list, optional = resolved_types(type(self))[f.name]
            value, name = getattr(self, f.name), flag(f)
            if value is None:
                if f.metadata["required"]:
                    raise UserError(f"{name} is required")
                if not optional:
                    raise UserError(f"{name}: expected {_KIND[tp]}, got None")
                continue
            if is_list:
                if not isinstance(value, (list, tuple)):
                    raise UserError(f"{name}: expected a list, got {_short(value)}")
                value = [_checked(f, v, tp, name) for v in value]
            else:
                value = _checked(f, value, tp, name)
            setattr(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Checks across fields; a group or command that has some overrides this and calls super().check()."""

    def missing_path(self) -> str | None:
        """The first option naming a dir or file that does not exist, as a message; None when all exist."""
        for f in fields(self):
            kind, value = f.metadata["exists"], getattr(self, f.name)
            if value is not None and kind and not {"dir": os.path.isdir, "file": os.path.isfile}[kind](value):
                return f"{flag(f)}: {kind} not found: {value if value.isprintable() else repr(value)}"
        return None


# ------------------------------------------------------------------------------------------ shared groups
@dataclass
class DatasetOptions(Options):
    """dataset"""
    data: str = opt(help="dataset root: metadata.jsonl and the images it names (read relative to it)",
                    required=True, exists="dir")


@dataclass
class PreparedSplitOptions(Options):
    """prepared split"""
    split_dir: str = opt(help="output dir of `animatch prepare` (train.jsonl, val.jsonl, test.jsonl)",
                         required=True, exists="dir")


@dataclass
class EvaluationSplitOptions(PreparedSplitOptions):
    """evaluation"""
    split: str = opt("test", "which split to evaluate", choices=SPLITS)
    max_items: Optional[int] = opt(None, "evaluate at most this many characters (unset: all)", bounds=AT_LEAST_1)


@dataclass
class WorkerOptions(Options):
    """worker"""
    workers: int = opt(2, "worker processes that decode, draw or check images (per training process when "
                          "training); 0: do it in the main process", bounds=NOT_NEGATIVE)


@dataclass
class DeviceOptions(Options):
    """device"""
    device: Optional[str] = opt(None, "torch device, e.g. cpu, cuda:1 (unset: a CUDA GPU when there is one, one "
                                      "per process under accelerate launch, else CPU)", pattern=DEVICE)


@dataclass
class ImageLimitOptions(Options):
    """image limit"""
    max_image_pixels: int = opt(89_478_485, "images above this many pixels are refused (decompression bombs)",
                                bounds=AT_LEAST_1)


@dataclass
class EmbeddingOptions(WorkerOptions, DeviceOptions):
    """CLIP embedding"""
    batch_size: int = opt(64, "images or texts per embedding batch", bounds=AT_LEAST_1)


@dataclass
class EmbeddingCacheOptions(Options):
    """embedding cache"""
    cache: bool = opt(True, "reuse and store embeddings in --cache-dir")
    cache_dir: str = opt(DEFAULT_EMBEDDING_CACHE, "embedding cache root (one sub-dir per model)")


@dataclass
class AttentionOptions(Options):
    """attention"""
    attn_implementation: str = opt("sdpa", "attention kernel (flash_attention_2 needs CUDA and flash-attn; eager "
                                           "ran faster for clip-tiny on CPU)", choices=ATTENTION)


@dataclass
class TrainingLoopOptions(DatasetOptions, PreparedSplitOptions, WorkerOptions, AttentionOptions):
    """training loop"""
    max_steps: Optional[int] = opt(None, "stop after this many optimizer steps (overrides --epochs)",
                                   bounds=AT_LEAST_1)
    max_grad_norm: float = opt(1.0, "gradient clipping max norm (0 disables)", bounds=NOT_NEGATIVE)
    mixed_precision: str = opt("auto", "autocast dtype (judge-train lora/qlora: also the frozen base's weights); "
                                       "auto: bf16 on GPUs that have it, else fp16 on GPU, no on CPU",
                               choices=MIXED_PRECISION)
    log_every: int = opt(10, "write metrics every N optimizer steps", bounds=AT_LEAST_1)
    eval_every: Optional[int] = opt(None, "validate every N optimizer steps (unset: at the end of every epoch)",
                                    bounds=AT_LEAST_1)
    report_to: str = opt("tensorboard", "experiment tracker", choices=TRACKERS)
    max_bad_steps: int = opt(5, "stop after this many consecutive non-finite losses (each one is skipped)",
                             bounds=AT_LEAST_1)
    resume: bool = opt(False, "continue from RUN_DIR/last (weights, optimizer, schedule, RNG, data position)")
    deterministic: bool = opt(False, "bit-reproducible on CUDA too (deterministic kernels, no TF32, math attention): "
                                     "a resumed run equals an uninterrupted one; slower (docs/BENCHMARKS.md)")

    def check(self) -> None:
        super().check()
        if self.deterministic and self.attn_implementation == "flash_attention_2":
            raise UserError("--deterministic fixes the attention kernel: use --attn-implementation sdpa or eager")


@dataclass
class AdapterOptions(Options):
    """judge adapter"""
    adapter: Optional[str] = opt(None, "LoRA adapter dir of the judge, from `animatch judge-train` (optional "
                                       "mm_projector.safetensors inside)", exists="dir")


@dataclass
class JudgeModelOptions(AdapterOptions, DeviceOptions):
    """judge model"""
    model: str = opt(DEFAULT_LLAVA, "LLaVA checkpoint: hub id or local dir")
    dtype: Optional[str] = opt(None, "weights dtype (unset: float16 on CUDA, float32 on CPU)", choices=DTYPES)
    load_in_4bit: bool = opt(False, "quantise to 4 bits with bitsandbytes (CUDA only)")


@dataclass
class JudgeGenerationOptions(Options):
    """judge generation"""
    threshold: float = opt(6, "score (1-10) at or above which a pair is a match", bounds=SCORE)
    batch_size: int = opt(8, "pairs per batched generation", bounds=AT_LEAST_1)
    num_beams: int = opt(1, "stage 1 beam search width (1: greedy; more disables the stage-2 prefix reuse)",
                         bounds=AT_LEAST_1)
    max_description_tokens: int = opt(256, "stage 1: max new tokens of the image description", bounds=AT_LEAST_1)
    max_analysis_tokens: int = opt(200, "stage 2: max new tokens of the score and analysis", bounds=AT_LEAST_1)
    temperature: float = opt(0.3, "stage 2 sampling temperature (0: greedy)", bounds=NOT_NEGATIVE)
    top_p: float = opt(0.9, "stage 2 nucleus sampling top-p", bounds="(0, 1]")


def judge_option(name: str) -> Any:
    """Option `judge_<name>` of a command that runs the judge beside its own work: the same default, choices,
    range and meaning as the judge's `name`."""
    f = next(f for group in (JudgeModelOptions, JudgeGenerationOptions, AttentionOptions) for f in fields(group)
             if f.name == name)
    return opt(f.default, "judge " + f.metadata["help"], choices=f.metadata["choices"], bounds=f.metadata["bounds"])


@dataclass
class JudgeVerifierOptions(AdapterOptions):
    """judge verification"""
    judge_model: Optional[str] = opt(None, "LLaVA checkpoint (hub id or dir) of the two-stage judge (unset: no "
                                           "judge)")
    judge_threshold: float = judge_option("threshold")
    judge_batch_size: int = opt(4, "judge: pairs per batched generation (progress is reported per batch)",
                                bounds=AT_LEAST_1)
    judge_max_description_tokens: int = judge_option("max_description_tokens")
    judge_max_analysis_tokens: int = judge_option("max_analysis_tokens")
    judge_dtype: Optional[str] = judge_option("dtype")
    judge_load_in_4bit: bool = judge_option("load_in_4bit")
    judge_attn_implementation: str = judge_option("attn_implementation")

    def check(self) -> None:
        super().check()
        if self.adapter and not self.judge_model:
            raise UserError("--adapter needs --judge-model")


@dataclass
class BaselineOptions(Options):
    """baseline"""
    baseline: Optional[str] = opt(None, "a second checkpoint evaluated side by side (e.g. the one training started "
                                        "from)")


@dataclass
class CandidateTextOptions(Options):
    """judge candidate text"""
    candidate_tokens: int = opt(128, "stage-2 candidate texts are the appearance cut to whole sentences within "
                                     "this many tokens", bounds=AT_LEAST_1)


@dataclass
class OutputOptions(Options):
    """output"""
    overwrite: bool = opt(False, "write into an --out holding files this command did not write (an input is never "
                                 "overwritten; see animatch.runs.claim_output)")


@dataclass
class JsonOutputOptions(Options):
    """output format"""
    json: bool = opt(False, "print the result as JSON")


# ---------------------------------------------------------------------------------------------- data
@dataclass
class SynthConfig(WorkerOptions, OutputOptions):
    """Draw a synthetic persona dataset in the AniPersonaCaps layout."""
    out: str = opt(help="output dataset root (metadata.jsonl + images/)", required=True)
    n: int = opt(3000, "number of characters", bounds=AT_LEAST_1)
    seed: int = opt(0, "random seed; the same seed gives byte-identical output", bounds=SEED)
    image_size: int = opt(128, "image width in pixels (height is 1.5x, portrait like the real data)",
                          bounds="[32, inf)")
    characters_per_title: int = opt(12, "mean number of characters per title (anime)", bounds=AT_LEAST_1)


@dataclass
class PrepareConfig(DatasetOptions, WorkerOptions, ImageLimitOptions, OutputOptions):
    """Clean, validate, deduplicate, chunk and split a dataset root (the reference optimized_metadata.py)."""
    out: str = opt(help="output dir for optimized_metadata.jsonl, train/val/test.jsonl, prepare_report.json",
                   required=True)
    metadata: str = opt("metadata.jsonl", "metadata file name, relative to --data")
    val_fraction: float = opt(0.05, "fraction of titles in the validation split", bounds="[0, 1)")
    test_fraction: float = opt(0.05, "fraction of titles in the test split", bounds="[0, 1)")
    split_seed: int = opt(0, "salt of the title hash that assigns splits", bounds=SEED)
    min_appearance_chars: int = opt(20, "appearance texts shorter than this (after cleaning) are dropped",
                                    bounds=NOT_NEGATIVE)
    chunk_tokens: int = opt(77, "max CLIP tokens per appearance chunk, start and end tokens included",
                            bounds="[8, inf)")
    tokenizer: Optional[str] = opt(None, "CLIP tokenizer (hub id or dir) for exact chunk lengths (unset: a "
                                         "conservative offline estimate)")
    placeholder_min_characters: int = opt(3, "an image shared by at least this many characters of different "
                                             "titles is a placeholder and dropped", bounds="[2, inf)")
    check_images: bool = opt(True, "decode every image once to validate it")

    def check(self) -> None:
        super().check()
        if self.val_fraction + self.test_fraction >= 1.0:
            raise UserError("--val-fraction plus --test-fraction must be below 1")


@dataclass
class DownloadConfig(OutputOptions):
    """Fetch AniPersonaCaps from the Hugging Face Hub (metadata + only the images needed)."""
    out: str = opt(help="output dataset root", required=True)
    repo: str = opt("mrzjy/AniPersonaCaps", "dataset repository on the Hub")
    limit: Optional[int] = opt(None, "keep only the first N records and download only their images (unset: all)",
                               bounds=AT_LEAST_1)
    revision: Optional[str] = opt(None, "git revision of the dataset repository (unset: the default branch)")


# -------------------------------------------------------------------------------------------- models
@dataclass
class InitModelConfig(OutputOptions):
    """Build a tiny randomly initialised checkpoint in exactly the Hub layout, offline."""
    preset: str = opt(help="which checkpoint", required=True, choices=TINY_PRESETS, positional=True)
    out: str = opt(help="output directory", required=True)
    vision_tower: Optional[str] = opt(None, "llava presets only: take the vision tower from this CLIP checkpoint "
                                            "(dir or hub id; unset: a random one)")
    seed: int = opt(0, "seed of the random initialisation", bounds=SEED)


@dataclass
class ImportCheckpointConfig(OutputOptions):
    """Turn a PyTorch CLIP state dict (.pth, e.g. the reference project's best_model.pth) into a checkpoint dir."""
    checkpoint: str = opt(help="the .pth file: a CLIPModel state dict, bare or under model_state_dict / "
                               "state_dict / model, DDP's module. prefix allowed", required=True, exists="file",
                          positional=True)
    out: str = opt(help="output checkpoint dir (model.safetensors, config.json, processor)", required=True)
    base: str = opt(DEFAULT_CLIP, "the CLIP checkpoint it was fine-tuned from (hub id or dir): architecture, "
                                  "processor, and every key and shape checked against it")


# ---------------------------------------------------------------------------------------------- CLIP
@dataclass
class TrainConfig(TrainingLoopOptions, OutputOptions):
    """Fine-tune CLIP contrastively (the reference recipe), on one CPU, one GPU or many via accelerate launch."""
    out: str = opt(help="run dir: best/, last/, metrics.jsonl, config.yaml, report.md", required=True)
    model: str = opt(DEFAULT_CLIP, "CLIP checkpoint to start from: hub id or local dir")
    epochs: int = opt(10, "passes over the training split", bounds=AT_LEAST_1)
    batch_size: int = opt(64, "pairs per process per micro-batch", bounds=AT_LEAST_1)
    accum_steps: int = opt(1, "micro-batches per optimizer step; the contrastive loss is exact over all of them",
                           bounds=AT_LEAST_1)
    lr: float = opt(1e-5, "peak learning rate (AdamW)", bounds=POSITIVE)
    adam_eps: float = opt(1e-6, "AdamW epsilon (CLIP's 1e-6; from scratch 1e-8 did better, docs/BENCHMARKS.md)",
                          bounds=POSITIVE)
    weight_decay: float = opt(0.05, "AdamW weight decay (never on biases, norms or logit_scale)",
                              bounds=NOT_NEGATIVE)
    eta_min: float = opt(1e-6, "final learning rate of the schedule", bounds=NOT_NEGATIVE)
    warmup_steps: int = opt(0, "linear warmup steps before the decay", bounds=NOT_NEGATIVE)
    lr_schedule: str = opt("cosine", "cosine: anneal to eta_min over the whole run (the reference); wsd: warmup, "
                                     "hold the peak, decay linearly over the last --decay-fraction",
                           choices=("cosine", "wsd"))
    decay_fraction: float = opt(0.3, "wsd: fraction of the steps spent decaying to eta_min", bounds="(0, 1]")
    logit_scale_init: Optional[float] = opt(None, "set the temperature scale (e.g. 16: logit_scale = ln 16; "
                                                  "unset: keep the checkpoint's)", bounds=POSITIVE)
    lock_image: bool = opt(False, "freeze the vision tower and its projection")
    lock_text: bool = opt(False, "freeze the text tower and its projection")
    gather_with_grad: bool = opt(True, "global negatives: gather features from all processes with gradients")
    crop_scale: float = opt(0.8, "smallest area fraction of the random resized crop (training only)",
                            bounds="(0, 1]")
    hflip: bool = opt(True, "random horizontal flip (training only)")
    patch_dropout: float = opt(0.0, "share of image patches dropped at random in each training forward (FLIP, "
                                    "open_clip's patch_dropout): cheaper steps; evaluation sees all patches",
                               bounds="[0, 1)")
    text_buckets: int = opt(1, "run the text tower on this many length-sorted groups, each padded to its own "
                               "longest text: fewer padding tokens, same embeddings (helps on CPU; 1 on GPU)",
                            bounds=AT_LEAST_1)
    text_sampling: str = opt("window", "training text of a pair: from a random appearance chunk on, as much as "
                                       "fits in 77 tokens (window), or that chunk alone (chunk)",
                             choices=("window", "chunk"))
    seed: int = opt(42, "seed of shuffling, augmentation, chunk sampling and initialisation", bounds=SEED)
    eval_batch_size: int = opt(128, "batch size when embedding the validation split", bounds=AT_LEAST_1)
    max_eval_items: Optional[int] = opt(None, "validate on at most this many characters (unset: all)",
                                        bounds=AT_LEAST_1)
    prefetch_batches: int = opt(4, "batches each loader worker keeps ready; the workers live across epochs and fill "
                                   "this while validation and checkpoints run", bounds=AT_LEAST_1)
    compile: bool = opt(False, "torch.compile the training forward (both towers): faster steps after a "
                               "compilation of tens of seconds at the start")

    def check(self) -> None:
        super().check()
        if self.lock_image and self.lock_text:
            raise UserError("--lock-image and --lock-text together leave nothing to train")


@dataclass
class EvalConfig(DatasetOptions, EvaluationSplitOptions, EmbeddingOptions, BaselineOptions, OutputOptions):
    """Evaluate a CLIP model on a split: accuracy, Recall@K both ways, cosine gap, BLEU/ROUGE of retrieved text."""
    out: str = opt(help="output dir: eval.json, eval.md, similarity_hist.png, recall_at_k.png", required=True)
    model: str = opt(DEFAULT_CLIP, "CLIP model to evaluate: hub id, local dir or a run's best/")
    in_batch_size: int = opt(64, "batch size of the in-batch accuracy (the reference's training batch)",
                             bounds=AT_LEAST_1)


# ------------------------------------------------------------------------------ match, index, search
@dataclass
class MatchConfig(EmbeddingOptions, EmbeddingCacheOptions, OutputOptions):
    """Rank candidate characters (or free texts) for every image in a folder; write matches and heatmaps."""
    images: str = opt(help="folder of images (searched recursively; other files are ignored)", required=True,
                      exists="dir")
    model: str = opt(help="CLIP model: hub id, local dir or a training run's best/", required=True)
    out: str = opt(help="output dir: matches.jsonl, matches.csv, heatmap*.png, summary.json, report.md",
                   required=True)
    metadata: Optional[str] = opt(None, "candidates: one per character of this (optimized_)metadata.jsonl",
                                  exists="file")
    texts: Optional[str] = opt(None, "candidates: free texts, one per line (instead of --metadata)", exists="file")
    top_k: int = opt(5, "matches kept per image", bounds=AT_LEAST_1)
    heatmap_rows: int = opt(40, "images per heatmap page", bounds=AT_LEAST_1)
    heatmap_cols: int = opt(30, "candidates per heatmap page (the best-scoring ones when there are more)",
                            bounds=AT_LEAST_1)


@dataclass
class IndexConfig(DatasetOptions, EmbeddingOptions, EmbeddingCacheOptions, OutputOptions):
    """Build a search index (faiss) of a dataset's image and appearance-text embeddings."""
    model: str = opt(help="CLIP model: hub id, local dir or a training run's best/", required=True)
    out: str = opt(help="index dir to write (replaced atomically)", required=True)
    split_dir: Optional[str] = opt(None, "output dir of `animatch prepare`: index its optimized_metadata.jsonl "
                                         "(unset: clean DATA/metadata.jsonl)", exists="dir")
    split: Optional[str] = opt(None, "with --split-dir: index only this split (unset: all)", choices=SPLITS)
    approximate_above: int = opt(50_000, "use an approximate HNSW index above this many vectors (exact inner "
                                         "product below; over 100k vectors exact search takes ~1.6 ms per query "
                                         "at 128-d and ~8 ms at 512-d on 2 CPU cores, HNSW 0.2-1.6 ms)",
                                 bounds=NOT_NEGATIVE)
    hnsw_neighbors: int = opt(32, "HNSW graph degree (approximate index only)", bounds="[2, inf)")


@dataclass
class SearchConfig(DeviceOptions, JsonOutputOptions):
    """Query an index: characters whose images match a text, or descriptions matching an image."""
    index: str = opt(help="index dir written by `animatch index`", required=True, exists="dir", positional=True)
    query: Optional[str] = opt(None, "text query, e.g. \"silver hair elf with twin tails\"", positional=True)
    image: Optional[str] = opt(None, "image query: find the character descriptions that match this image",
                               exists="file")
    k: int = opt(10, "number of results", bounds=AT_LEAST_1)


# --------------------------------------------------------------------------------------------- judge
@dataclass
class JudgeConfig(JudgeModelOptions, JudgeGenerationOptions, AttentionOptions, ImageLimitOptions,
                  JsonOutputOptions, OutputOptions):
    """Two-stage LLaVA judge: describe the image, then score how well an English text describes it (1-10)."""
    image: Optional[str] = opt(None, "single mode: the character image", exists="file")
    text: Optional[str] = opt(None, "single mode: the English text to judge against the image")
    pairs: Optional[str] = opt(None, "batch mode: JSONL, one {\"image\": path, \"text\": ...} per line (other "
                                     "fields are kept under \"fields\" in the results)", exists="file")
    out: Optional[str] = opt(None, "batch mode: results JSONL (resumable: judged pairs are skipped on rerun); "
                                   "summary and report go beside it")
    image_root: Optional[str] = opt(None, "batch mode: relative image paths are read from here (unset: the "
                                          "pairs file's directory)", exists="dir")
    seed: int = opt(0, "stage 2 sampling seed", bounds=SEED)
    retry_temperatures: list[float] = opt(
        [0.6, 0.9], "stage 2 retries at these temperatures while the score cannot be parsed; then the result is "
                    "'unparsed'", bounds=POSITIVE)
    reuse_prefix: bool = opt(True, "stage 2 reuses stage 1's KV cache (image + prompt + description)")
    static_cache: bool = opt(False, "generate into preallocated (static) KV caches, whose decode step transformers "
                                    "compiles on a GPU (CUDA graphs; a compile per batch size and cache length)")


# ---------------------------------------------------------------------------------------------- demo
@dataclass
class DemoConfig(OutputOptions):
    """The whole pipeline on the embedded synthetic dataset, offline: data, CLIP, match, search, judge."""
    out: str = opt("runs/demo", "output dir (replaced): every artefact and REPORT.md")
    quick: bool = opt(False, "smaller data and fewer steps (about 90 s; the CI smoke test)")
    seed: int = opt(0, "seed of the dataset and of training", bounds=SEED)


# ---------------------------------------------------------------------------------- judge fine-tuning
# The linear layers of a Llama-style language model (LLaVA-1.5) and of a BERT-style one (llava-minilm).
LORA_TARGET_MODULES = (r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj"
                       r"|query|key|value|dense)$")


@dataclass
class JudgeTrainConfig(TrainingLoopOptions, CandidateTextOptions, OutputOptions):
    """Fine-tune the LLaVA judge (LoRA, QLoRA or full) on both stages: describe the image, score a text."""
    out: str = opt(help="run dir: adapter/ (or model/ for --method full), last/, metrics.jsonl, report.md",
                   required=True)
    model: str = opt(DEFAULT_LLAVA, "LLaVA checkpoint to start from: hub id or local dir")
    method: str = opt("lora", "lora: LoRA on the language model + full projector; qlora: the same on a 4-bit base "
                              "(CUDA + bitsandbytes); full: language model + projector",
                      choices=("lora", "qlora", "full"))
    epochs: int = opt(1, "passes over the training examples (regenerated every epoch)", bounds=AT_LEAST_1)
    batch_size: int = opt(4, "examples per process per micro-batch", bounds=AT_LEAST_1)
    accum_steps: int = opt(4, "micro-batches per optimizer step", bounds=AT_LEAST_1)
    lr: float = opt(2e-4, "peak learning rate of the LoRA weights (full: of the language model)", bounds=POSITIVE)
    projector_lr: float = opt(2e-5, "peak learning rate of the multi-modal projector", bounds=NOT_NEGATIVE)
    weight_decay: float = opt(0.0, "AdamW weight decay (never on biases and norms)", bounds=NOT_NEGATIVE)
    scheduler: str = opt("cosine", "learning-rate schedule after warmup",
                         choices=("cosine", "linear", "constant_with_warmup"))
    warmup_ratio: float = opt(0.03, "fraction of the steps spent in linear warmup", bounds="[0, 1)")
    lora_r: int = opt(128, "LoRA rank", bounds=AT_LEAST_1)
    lora_alpha: int = opt(256, "LoRA alpha (scale alpha / r)", bounds=AT_LEAST_1)
    lora_dropout: float = opt(0.05, "LoRA dropout", bounds="[0, 1)")
    lora_target_modules: str = opt(LORA_TARGET_MODULES, "regex of the LoRA-wrapped linear layers (full name "
                                                        "match); the default keeps the vision tower untouched")
    gradient_checkpointing: bool = opt(False, "recompute activations in the backward pass (less memory, ~30% "
                                              "slower)")
    description_tokens: int = opt(192, "stage-1 target: appearance chunks joined up to this many tokens",
                                  bounds=AT_LEAST_1)
    description_examples: float = opt(1.0, "description (stage-1) examples per character per epoch (a fraction: "
                                           "one with that probability)",
                                    bounds=NOT_NEGATIVE)
    description_style: str = opt("text", "stage-1 target: text (the appearance chunks) or keywords (the appearance "
                                         "keywords of evaluate.keywords.canonical_keywords, comma-separated)",
                                 choices=("text", "keywords"))
    group_by_kind: bool = opt(False, "batch descriptions with descriptions and stage-2 examples with stage-2 "
                                     "examples (as LLaVA's group_by_modality_length), so the short stage-1 examples "
                                     "are not padded to the stage-2 length")
    group_by_length: bool = opt(False, "batch examples of about the same length: the examples of every "
                                       f"{LENGTH_GROUP_BATCHES} batches are sorted by length and batched again (as "
                                       "transformers' group_by_length), so little of a step is padding")
    describe_steps: int = opt(0, "optimizer steps on description examples only before the stage-2 examples join",
                              bounds=NOT_NEGATIVE)
    stage2_context: str = opt("reference", "the description in a stage-2 example's context: reference (made from "
                                           "the appearance text) or own (the model's own greedy description, "
                                           "written after --describe-steps, as at inference)",
                              choices=("reference", "own"))
    context_noise: float = opt(0.0, "stage2-context reference with keyword descriptions: probability that a "
                                    "context keyword is left out or (half the time) swapped for another "
                                    "character's, as a describer errs", bounds=PROBABILITY)
    context_noise_from: int = opt(0, "optimizer step from which stage-2 contexts carry --context-noise (exact "
                                     "before it: stage 2 first learns to compare, then to allow for a describer's "
                                     "errors)", bounds=NOT_NEGATIVE)
    context_loss: bool = opt(False, "a stage-2 example whose context is the exact description target (the "
                                    "reference's, without errors) carries the stage-1 loss on it too, as LLaVA "
                                    "trains every assistant turn: stage 1 learns from stage-2 examples at no cost")
    score_loss_weight: float = opt(1.0, "weight in the loss of a stage-2 answer's score digits (every other "
                                        "answer token weighs 1): the score is the decision, one token of many",
                                   bounds=POSITIVE)
    own_descriptions: Optional[int] = opt(None, "stage2-context own or --own-context-from: describe this many "
                                                "training characters (seeded draw; unset: all); stage-2 examples "
                                                "use only them", bounds="[2, inf)")
    own_context_from: int = opt(0, "with --stage2-context reference: optimizer step from which stage-2 contexts are "
                                   "the model's own greedy descriptions (of --own-descriptions characters, written "
                                   "then), as at inference; 0: never", bounds=NOT_NEGATIVE)
    negatives_per_positive: int = opt(1, "stage-2 negatives (another character's appearance) per positive",
                                      bounds=NOT_NEGATIVE)
    same_title_negatives: float = opt(1.0, "probability that a negative comes from the same title (when the "
                                           "title has another character)", bounds=PROBABILITY)
    personality_negatives: float = opt(0.1, "probability per character of an extra stage-2 negative whose text "
                                            "is its personality (a text that does not describe the looks)",
                                       bounds=PROBABILITY)
    positive_score: int = opt(9, "stage-2 target score of a positive", bounds=SCORE)
    negative_score: int = opt(2, "stage-2 target score of a negative", bounds=SCORE)
    max_length: int = opt(2048, "examples longer than this many tokens are skipped (and counted)",
                          bounds=AT_LEAST_1)
    seed: int = opt(42, "seed of example sampling, shuffling and LoRA initialisation", bounds=SEED)
    save_every: Optional[int] = opt(None, "write the resume checkpoint last/ every N optimizer steps (unset: at "
                                          "the end of every epoch)", bounds=AT_LEAST_1)
    max_eval_examples: int = opt(64, "validation loss over at most this many val-split examples (0: none)",
                                 bounds=NOT_NEGATIVE)
    merge: bool = opt(False, "lora/qlora: also write RUN_DIR/merged, a full checkpoint with the adapter merged")

    def check(self) -> None:
        super().check()
        if self.negative_score >= self.positive_score:
            raise UserError("--negative-score must be below --positive-score")
        if self.merge and self.method == "full":
            raise UserError("--merge applies to --method lora or qlora (full already writes a whole checkpoint)")
        if self.context_noise and (self.description_style != "keywords" or self.stage2_context != "reference"):
            raise UserError("--context-noise errs the keyword descriptions of --stage2-context reference: it needs "
                            "--description-style keywords")
        if self.context_noise_from and not self.context_noise:
            raise UserError("--context-noise-from starts --context-noise: set --context-noise above 0")
        if self.own_context_from and self.stage2_context != "reference":
            raise UserError("--own-context-from switches --stage2-context reference to the model's own descriptions: "
                            "it needs --stage2-context reference (own uses them from the start)")
        if self.context_loss and self.stage2_context != "reference":
            raise UserError("--context-loss trains the reference descriptions in stage-2 contexts: it needs "
                            "--stage2-context reference")
        if self.describe_steps and not self.description_examples:
            raise UserError("--describe-steps trains on description examples: --description-examples must be above 0")
        try:
            re.compile(self.lora_target_modules)
        except re.error as e:
            raise UserError(f"--lora-target-modules is not a valid regex: {e}") from None


@dataclass
class JudgeEvalConfig(DatasetOptions, EvaluationSplitOptions, JudgeModelOptions, JudgeGenerationOptions,
                      AttentionOptions, CandidateTextOptions, BaselineOptions, OutputOptions):
    """Evaluate the judge on test-split pairs: verdict accuracy + ROC-AUC, keyword Recall@K, BLEU/ROUGE, cosine."""
    out: str = opt(help="output dir: judge_eval.json, judge_eval.md, score_hist.png, pairs_<model>.jsonl",
                   required=True)
    baseline_adapter: Optional[str] = opt(None, "adapter of the baseline", exists="dir")
    groups: int = opt(1, "divide the characters into N groups (negatives drawn within a group); per-group and "
                         "overall figures", bounds=AT_LEAST_1)
    k: int = opt(5, "keyword Recall@K: among the first K keywords of the description", bounds=AT_LEAST_1)
    seed: int = opt(0, "seed of the negative sampling, the groups and stage-2 sampling", bounds=SEED)
    sentence_model: str = opt("sentence-transformers/all-MiniLM-L6-v2", "sentence-embedding model of the "
                                                                         "semantic cosine")
    semantic: bool = opt(True, "compute the semantic cosine (loads the sentence model)")

    def check(self) -> None:
        super().check()
        if self.baseline_adapter and not self.baseline:
            raise UserError("--baseline-adapter needs --baseline (the checkpoint it adapts)")


# --------------------------------------------------------------------------------------------- audit
@dataclass
class AuditConfig(DatasetOptions, EmbeddingOptions, EmbeddingCacheOptions, JudgeVerifierOptions, OutputOptions):
    """Find mismatched image-text pairs: CLIP scores every pair, an optional LLaVA judge verifies the flagged ones."""
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
                                    "non-fitting (the sentence threshold is that quantile of their deficits)",
                              bounds="(0, 1)")
    trim_sentences: bool = opt(False, "clean_metadata.jsonl: remove non-fitting sentences instead of dropping whole "
                                      "pairs (a flagged pair is kept only if its trimmed text passes)")
    force_clean: bool = opt(False, "write clean_metadata.jsonl even when the calibration finds the flags it acts "
                                   "on unreliable (by default it is then not written)")
    calibration_swaps: int = opt(5, "simulated swaps per calibration pair (texts moved to other images)",
                                 bounds=AT_LEAST_1)
    min_calibration_pairs: int = opt(20, "calibrate on all pairs when the val split has fewer than this",
                                     bounds="[2, inf)")
    reference_images: int = opt(4096, "images (a seeded sample) that each sentence is compared against",
                                bounds="[10, inf)")
    seed: int = opt(0, "seed of the calibration swaps, the reference sample and the judge's unflagged sample",
                    bounds=SEED)
    judge_sample: int = opt(20, "unflagged pairs (random) also judged, to estimate what CLIP misses",
                            bounds=NOT_NEGATIVE)
    judge_max_pairs: Optional[int] = opt(None, "judge at most this many flagged pairs, the lowest fit first (unset: "
                                               "all)", bounds=NOT_NEGATIVE)
    judge_clears: bool = opt(True, "a flagged pair the judge scores as a match is no longer flagged")
    html_max_items: int = opt(300, "flagged.html shows at most this many pairs per section (all are in audit.jsonl)",
                              bounds=AT_LEAST_1)
    thumbnail_size: int = opt(160, "longest side of the thumbnails embedded in flagged.html, in pixels",
                              bounds=AT_LEAST_1)


# --------------------------------------------------------------------------------------------- serve
@dataclass
class ServeConfig(DeviceOptions, JudgeVerifierOptions, ImageLimitOptions):
    """Web app + JSON API: search, match and judge in the browser (FastAPI; the API is described at /docs)."""
    index: str = opt(help="index dir written by `animatch index`", required=True, exists="dir")
    model: Optional[str] = opt(None, "CLIP model (hub id or dir) instead of the one recorded in the index; it "
                                     "must give vectors of the index's dimension (unset: the index's)")
    host: str = opt("127.0.0.1", "address to listen on (0.0.0.0 exposes the app to the whole network)")
    port: int = opt(7860, "port to listen on (0: any free port)", bounds="[0, 65535]")
    max_upload_mb: float = opt(10.0, "largest request body in MiB (all uploaded images together); larger: HTTP 413",
                               bounds=POSITIVE)
    max_decode_pixels: int = opt(16_777_216, "an uploaded image above this many pixels is decoded downscaled "
                                             "(JPEG) or refused (other formats)", bounds=AT_LEAST_1)
    max_request_pixels: int = opt(67_108_864, "most decoded pixels of all the images of one request together",
                                  bounds=AT_LEAST_1)
    max_judge_text_chars: int = opt(4000, "longest judge text, in characters", bounds=AT_LEAST_1)
    max_k: int = opt(50, "most results one search may ask for", bounds=AT_LEAST_1)
    max_match_images: int = opt(16, "most images in one match request", bounds=AT_LEAST_1)
    max_candidates: int = opt(200, "most candidate texts and characters in one match request", bounds=AT_LEAST_1)
    judge_queue: int = opt(8, "judge requests that may wait behind the running one; more: HTTP 429",
                           bounds=NOT_NEGATIVE)
    cascade_k: int = opt(5, "judge cascade: CLIP candidates re-scored by the judge (the most a request may ask)",
                         bounds=AT_LEAST_1)
