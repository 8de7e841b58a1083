"""The trainable judge: which weights `judge-train` trains, how it saves them, and the loss it minimises.

`load_trainable` loads a LLaVA checkpoint for a method: `lora` wraps the language model's attention and MLP
projections in PEFT LoRA (the `lora_target_modules` regex only matches under `language_model`, so the vision
tower is untouched) and trains the multi-modal projector fully; `qlora` does the same on a 4-bit NF4 base
(bitsandbytes, CUDA only; projector, vision tower and head stay unquantised); `full` trains the language model
and the projector. The vision tower is always frozen; under lora/qlora the frozen base is held in the autocast
dtype and the trained weights in float32. `param_groups` gives the projector its own learning rate.
`TrainedWeights` is what a checkpoint stores as its model (adapter + `mm_projector.safetensors`, in the format
`judge.loading` reads, or the whole model). `answer_loss` is the next-token loss on answer tokens only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from animatch.config import JudgeTrainConfig
from animatch.errors import UserError
from animatch.judge.examples import IGNORE_INDEX
from animatch.judge.loading import PROJECTOR_FILE, PROJECTOR_METADATA, load_projector
from animatch.models.hub import load_llava

QUANTIZATION_SKIP = ["multi_modal_projector", "vision_tower", "lm_head"]


def answer_loss(model, batch: dict, device: torch.device) -> tuple[torch.Tensor, int]:
    """(next-token cross-entropy over the answer tokens, weighted by the batch's "weights" when it has them
    (the score's digits can weigh more than the words around them), their number). Logits are computed only
    at positions where some row predicts an answer token: most of a judge example is prompt, and the
    [batch, length, vocabulary] logits would dominate time and memory."""
    labels = batch["labels"].to(device)
    keep = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
    logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                   pixel_values=batch["pixel_values"].to(device), logits_to_keep=keep, use_cache=False).logits
    targets = labels[:, keep + 1]
    losses = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                               ignore_index=IGNORE_INDEX, reduction="none")
    answer = (targets != IGNORE_INDEX).flatten()
    weights = batch["weights"].to(device)[:, keep + 1].flatten() if "weights" in batch else answer.float()
    weights = weights * answer
    return (losses * weights).sum() / weights.sum().clamp_min(1e-8), int(answer.sum())


def base_of(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def projector_of(model) -> torch.nn.Module:
    return base_of(model).model.multi_modal_projector


def load_trainable(cfg: JudgeTrainConfig, device: torch.device, mixed: str):
    """(model in train mode with exactly the weights of `cfg.method` trainable, processor)."""
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    last = Path(cfg.out) / "last"
    dtype = torch.float32 if cfg.method == "full" else {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        mixed, torch.float32)
    source = str(last) if cfg.resume and cfg.method == "full" else cfg.model
    model, processor = load_llava(source, device=device, dtype=dtype, load_in_4bit=cfg.method == "qlora",
                                  attn_implementation=cfg.attn_implementation,
                                  skip_quantization=QUANTIZATION_SKIP if cfg.method == "qlora" else None)
    if cfg.method != "full":
        if cfg.method == "qlora":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        if cfg.resume:
            load_projector(model, last)
            model = PeftModel.from_pretrained(model, str(last), is_trainable=True)
        else:
            lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                              target_modules=cfg.lora_target_modules, bias="none")
            try:
                model = get_peft_model(model, lora)
            except ValueError as e:
                raise UserError(f"--lora-target-modules: {str(e).splitlines()[0]}") from None
        projector_of(model).float()
    model.requires_grad_(cfg.method == "full")
    if cfg.method != "full":
        for name, param in model.named_parameters():
            param.requires_grad_("lora_" in name)
    projector_of(model).requires_grad_(True)
    base_of(model).model.vision_tower.requires_grad_(False)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model.train(), processor


def param_groups(model, cfg: JudgeTrainConfig) -> list[dict]:
    """AdamW groups: trained language-model weights (decayed / not), the projector at its own lr."""
    projector = {id(p) for p in projector_of(model).parameters()}
    decay, no_decay, proj = [], [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (proj if id(p) in projector else no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    groups = [{"params": decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0},
              {"params": proj, "lr": cfg.projector_lr, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class TrainedWeights:
    """What a checkpoint stores as its model: the PEFT adapter + projector, or the whole model (`full`).
    `state_dict` is the gathered state under DeepSpeed/FSDP (the live parameters are shards there)."""

    def __init__(self, model, state_dict: dict | None = None):
        self.model, self.state_dict = model, state_dict

    def save_pretrained(self, path, safe_serialization: bool = True) -> None:
        self.model.save_pretrained(path, state_dict=self.state_dict, safe_serialization=safe_serialization)
        if not hasattr(self.model, "peft_config"):
            return
        source = self.state_dict or {f"multi_modal_projector.{k}": v
                                     for k, v in projector_of(self.model).state_dict().items()}
        state = {k.split("multi_modal_projector.", 1)[1]: v.detach().cpu().contiguous()
                 for k, v in source.items() if "multi_modal_projector." in k}
        save_file(state, str(Path(path) / PROJECTOR_FILE), metadata=PROJECTOR_METADATA)
