"""`animatch init-model`: tiny randomly initialised CLIP and LLaVA checkpoints in exactly the Hub layout.

`build_tiny(preset, out)` writes a directory that `CLIPModel` / `LlavaForConditionalGeneration` /
`AutoProcessor.from_pretrained` load exactly like openai/clip-vit-base-patch32 and llava-hf/llava-1.5-7b-hf:
config.json, model.safetensors, tokenizer files (offline-trained, reproducible: `models.tokenizers`),
preprocessor_config.json, and for LLaVA processor_config.json plus llava-1.5's chat template
(`USER: <image>\\n... ASSISTANT:`). llava-tiny is built the way LLaVA is: a CLIP vision tower (clip-tiny's
shape, or copied with its weights and image preprocessing from `vision_tower`), a two-layer MLP projector
and a small Llama language model. llava-minilm is the same around a pre-trained language model (`models.minilm`:
all-MiniLM-L6-v2 run as a decoder, from the copy the `judge` extra installs), the tiny judge that can learn to
compare texts on a CPU. Same preset and seed give the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from animatch.config import InitModelConfig
from animatch.errors import UserError
from animatch.runs import atomic_dir, claim_output, markdown_table, write_run_files

CLIP_VOCAB = 8192
LLAMA_VOCAB = 4096
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}"
    "{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# llava-minilm's: an answer ends with the end token ([SEP]), so that the judge's description and the candidate text
# after it are two segments apart, as BERT read sentence pairs in pre-training.
SEPARATED_CHAT_TEMPLATE = LLAVA_CHAT_TEMPLATE.replace("{% generation %}{{ content['text'] + ' '}}",
                                                      "{% generation %}{{ content['text'] + ' ' + eos_token + ' '}}")


def _clip_preset(width: int, layers: int, heads: int, image_size: int, patch: int) -> dict:
    return {"kind": "clip", "width": width, "layers": layers, "heads": heads, "image_size": image_size,
            "patch_size": patch}


PRESETS: dict[str, dict] = {
    "clip-tiny": _clip_preset(128, 4, 4, 64, 8),
    "clip-small": _clip_preset(256, 6, 4, 112, 16),
    "llava-tiny": {"kind": "llava", "vision": "clip-tiny", "width": 128, "layers": 2, "heads": 4,
                   "intermediate": 352, "max_positions": 2048},
    # The language model is pre-trained (models.minilm): the first `layers` of all-MiniLM-L6-v2's six.
    "llava-minilm": {"kind": "llava", "vision": "clip-tiny", "language": "all-MiniLM-L6-v2", "layers": 6},
}


def _vision_config(p: dict):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=p["width"], intermediate_size=4 * p["width"], num_hidden_layers=p["layers"],
                            num_attention_heads=p["heads"], image_size=p["image_size"], patch_size=p["patch_size"],
                            projection_dim=p["width"])


def _image_processor(image_size: int):
    from transformers import CLIPImageProcessorPil  # the torchvision-free one; saved as "CLIPImageProcessor"

    return CLIPImageProcessorPil(size={"shortest_edge": image_size},
                              crop_size={"height": image_size, "width": image_size})


def _build_clip(p: dict, out: Path) -> int:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    from animatch.models.tokenizers import build_clip_tokenizer

    tokenizer = build_clip_tokenizer(CLIP_VOCAB)
    text = {"vocab_size": CLIP_VOCAB, "hidden_size": p["width"], "intermediate_size": 4 * p["width"],
            "num_hidden_layers": p["layers"], "num_attention_heads": p["heads"], "max_position_embeddings": 77,
            "projection_dim": p["width"], "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    config = CLIPConfig(text_config=text, vision_config=_vision_config(p).to_dict(), projection_dim=p["width"])
    model = CLIPModel(config)
    model.save_pretrained(out)
    CLIPProcessor(image_processor=_image_processor(p["image_size"]), tokenizer=tokenizer).save_pretrained(out)
    return model.num_parameters()


def _vision_source(p: dict, vision_tower: str | None):
    """(vision config, vision weights or None, image processor) of the tower to build llava-tiny on."""
    if vision_tower is None:
        vp = PRESETS[p["vision"]]
        return _vision_config(vp), None, _image_processor(vp["image_size"])
    from animatch.models.hub import load_clip

    clip, processor = load_clip(vision_tower, device="cpu", dtype=torch.float32)
    return clip.config.vision_config, clip.vision_model.state_dict(), processor.image_processor


def _build_llava(p: dict, out: Path, vision_tower: str | None) -> int:
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from animatch.models.minilm import minilm_language
    from animatch.models.tokenizers import build_llama_tokenizer

    vision_config, vision_weights, image_processor = _vision_source(p, vision_tower)
    if "language" in p:
        tokenizer, text, language_weights, head = minilm_language(p["layers"])
    else:
        tokenizer = build_llama_tokenizer(LLAMA_VOCAB)
        tokenizer.model_max_length = p["max_positions"]
        text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=p["width"], intermediate_size=p["intermediate"],
                           num_hidden_layers=p["layers"], num_attention_heads=p["heads"],
                           num_key_value_heads=p["heads"], max_position_embeddings=p["max_positions"],
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    config = LlavaConfig(vision_config=vision_config.to_dict(), text_config=text.to_dict(),
                         image_token_index=image_token_id, image_seq_length=patches,
                         vision_feature_select_strategy="default", vision_feature_layer=-2,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlavaForConditionalGeneration(config)
    if vision_weights is not None:
        model.model.vision_tower.load_state_dict(vision_weights)
    if "language" in p:
        model.model.language_model.load_state_dict(language_weights)
        model.lm_head.weight.data.copy_(head)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=vision_config.patch_size,
                   vision_feature_select_strategy="default",
                   chat_template=SEPARATED_CHAT_TEMPLATE if "language" in p else LLAVA_CHAT_TEMPLATE,
                   image_token="<image>", num_additional_image_tokens=1).save_pretrained(out)
    return model.num_parameters()


def build_tiny(preset: str, out, vision_tower: str | None = None, seed: int = 0) -> Path:
    """Write checkpoint `preset` (see PRESETS) to `out` (replaced atomically) and return its path."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} (expected one of {', '.join(PRESETS)})")
    p = PRESETS[preset]
    if vision_tower is not None and p["kind"] != "llava":
        raise UserError("--vision-tower applies to llava presets only")
    out = Path(out)
    torch.manual_seed(seed)
    with atomic_dir(out) as tmp:
        params = _build_clip(p, tmp) if p["kind"] == "clip" else _build_llava(p, tmp, vision_tower)
        metrics = {"preset": preset, "parameters": params, "seed": seed, "vision_tower": vision_tower}
        start = (f"{p['kind']} checkpoint whose language model starts from {p['language']}" if "language" in p
                 else f"Randomly initialised {p['kind']} checkpoint")
        report = (f"# {preset}\n\n{start}, built offline by `animatch init-model` (seed {seed}); for tests "
                  "and demos, not for real predictions.\n\n"
                  + markdown_table([{"setting": k, "value": v} for k, v in {**p, "parameters": params}.items()]))
        write_run_files(tmp, None, metrics, report, metrics_name="init_model.json", report_name="README.md")
    return out


def run_init_model(cfg: InitModelConfig) -> int:
    """CLI entry: build the checkpoint and print where it is and how big."""
    claim_output(cfg, "init-model")
    out = build_tiny(cfg.preset, cfg.out, cfg.vision_tower, cfg.seed)
    params = json.loads((out / "init_model.json").read_text())["parameters"]
    print(f"init-model: {cfg.preset} ({params / 1e6:.2f}M parameters) -> {out}")
    return 0
