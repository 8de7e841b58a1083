"""`animatch judge-train` on llava-tiny: LoRA lowers the loss and changes only LoRA + projector, the adapter
reloads and `judge --adapter` uses it, `--merge` loads with from_pretrained, exact resume, full fine-tuning,
user mistakes, the shipped accelerate configs, and the training phases (describe-only, exact contexts, contexts
with a describer's errors)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoProcessor, LlavaForConditionalGeneration

from animatch.cli import main
from animatch.config import JudgeTrainConfig
from animatch.data.schema import load_split
from animatch.errors import UserError
from animatch.judge.examples import ExampleCollator, JudgeExampleDataset, LengthGroupCollator
from animatch.judge.loading import load_judge_model
from animatch.judge.train import Trainer, training_phase
from animatch.judge.trainable import answer_loss, load_trainable
from animatch.training.runtime import fresh_accelerator

# Short texts and a constant learning rate: the schedule does not depend on --max-steps, so a run stopped
# and resumed must end exactly where an uninterrupted one does.
FAST = ["--batch-size", "2", "--accum-steps", "1", "--lr", "5e-3", "--projector-lr", "5e-3", "--workers", "0",
        "--scheduler", "constant_with_warmup", "--warmup-ratio", "0", "--description-tokens", "40",
        "--candidate-tokens", "32", "--max-eval-examples", "4", "--log-every", "2"]
# Runs train on the machine's accelerator (CUDA when present). There, the exact resume of the LoRA runs needs
# --deterministic (kernels may reduce in another order from run to run); on the CPU it holds without.
EXACT = ["--deterministic"] if torch.cuda.is_available() else []
LORA = ["--lora-r", "8", "--lora-alpha", "16", *EXACT]


def train(llava_tiny_dir, synth_root, prepared_dir, out, *args) -> int:
    return main(["judge-train", "--data", str(synth_root), "--split-dir", str(prepared_dir), "--model",
                 str(llava_tiny_dir), "--out", str(out), *FAST, *map(str, args)])


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, llava_tiny_dir, synth_root, prepared_dir) -> Path:
    out = tmp_path_factory.mktemp("judge_train") / "run"
    assert train(llava_tiny_dir, synth_root, prepared_dir, out, *LORA, "--max-steps", 6, "--save-every", 3,
                 "--merge", "--report-to", "tensorboard") == 0
    return out


@pytest.fixture(scope="module")
def fixed_batch(llava_tiny_dir, synth_root, prepared_dir):
    processor = AutoProcessor.from_pretrained(str(llava_tiny_dir))
    cfg = JudgeTrainConfig(data=str(synth_root), split_dir=str(prepared_dir), out="unused", description_tokens=40,
                           candidate_tokens=32)
    dataset = JudgeExampleDataset(load_split(prepared_dir, "train"), synth_root, processor, cfg, seed=cfg.seed)
    return ExampleCollator(processor.tokenizer.pad_token_id)([dataset[i] for i in range(12)])


def _loss(model, batch) -> float:
    """Loss of a model loaded on the CPU (models here are compared in float32 on the CPU)."""
    with torch.no_grad():
        return answer_loss(model, batch, torch.device("cpu"))[0].item()


def test_lora_lowers_the_loss_and_changes_only_lora_and_projector(lora_run, llava_tiny_dir, fixed_batch):
    base = LlavaForConditionalGeneration.from_pretrained(str(llava_tiny_dir)).eval()
    tuned, _ = load_judge_model(str(llava_tiny_dir), adapter=str(lora_run / "adapter"), device="cpu")
    assert _loss(tuned, fixed_batch) < _loss(base, fixed_batch) - 0.2

    adapter = load_file(str(lora_run / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k and "language_model" in k for k in adapter)
    wrapped = {k.split(".lora_")[0].rsplit(".", 1)[1] for k in adapter}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    before, after = base.state_dict(), tuned.state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {k for k in before if "multi_modal_projector" in k} <= changed  # fully trained
    assert not any("vision_tower" in k for k in changed)
    assert all(k.endswith(("_proj.weight",)) and "language_model" in k or "multi_modal_projector" in k
               for k in changed)  # merged LoRA deltas land on the wrapped projections only


def test_adapter_reloads_and_judge_uses_it(lora_run, llava_tiny_dir, fixtures_dir, capsys):
    projector = load_file(str(lora_run / "adapter" / "mm_projector.safetensors"))
    model, _ = load_judge_model(str(llava_tiny_dir), adapter=str(lora_run / "adapter"), device="cpu")
    for name, value in model.model.multi_modal_projector.state_dict().items():
        assert torch.equal(value, projector[name])
    image = sorted((fixtures_dir / "images").rglob("*.png"))[0]
    assert main(["judge", "--model", str(llava_tiny_dir), "--adapter", str(lora_run / "adapter"), "--image",
                 str(image), "--text", "A girl with long white hair.", "--json", "--max-description-tokens", "4",
                 "--max-analysis-tokens", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] in ("ok", "unparsed")


def test_merged_checkpoint_loads_with_from_pretrained(lora_run, llava_tiny_dir, fixed_batch):
    merged = LlavaForConditionalGeneration.from_pretrained(str(lora_run / "merged")).eval()
    assert AutoProcessor.from_pretrained(str(lora_run / "merged")).tokenizer is not None
    tuned, _ = load_judge_model(str(llava_tiny_dir), adapter=str(lora_run / "adapter"), device="cpu")
    assert _loss(merged, fixed_batch) == pytest.approx(_loss(tuned, fixed_batch), abs=1e-5)


def test_run_files_and_exact_resume(lora_run, llava_tiny_dir, synth_root, prepared_dir, tmp_path):
    rows = [json.loads(line) for line in (lora_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6] and any("val/loss" in r for r in rows)
    summary = json.loads((lora_run / "metrics.json").read_text())
    assert summary["steps"] == 6 and summary["method"] == "lora" and sum(summary["examples_seen"].values()) == 12
    assert (lora_run / "config.yaml").is_file() and "adapter" in (lora_run / "report.md").read_text()
    assert list(lora_run.rglob("events.out.tfevents.*"))
    assert (lora_run / "last" / "trainer_state" / "optimizer.safetensors").is_file()

    out = tmp_path / "run"  # stopped after 3 steps, then resumed to 6: the same weights as never stopping
    assert train(llava_tiny_dir, synth_root, prepared_dir, out, *LORA, "--max-steps", 3) == 0
    assert train(llava_tiny_dir, synth_root, prepared_dir, out, *LORA, "--max-steps", 6) == 2  # no --resume
    assert train(llava_tiny_dir, synth_root, prepared_dir, out, *LORA, "--max-steps", 6, "--resume") == 0
    for name in ("adapter_model.safetensors", "mm_projector.safetensors"):
        resumed, straight = load_file(str(out / "adapter" / name)), load_file(str(lora_run / "adapter" / name))
        assert resumed.keys() == straight.keys()
        for k in straight:
            torch.testing.assert_close(resumed[k], straight[k], rtol=1e-5, atol=1e-6)


def test_full_method_trains_language_model_and_projector(llava_tiny_dir, synth_root, prepared_dir, tmp_path):
    assert train(llava_tiny_dir, synth_root, prepared_dir, tmp_path / "run", "--method", "full", "--max-steps", 2,
                 "--lr", "1e-3", "--report-to", "none", "--group-by-kind") == 0
    base = LlavaForConditionalGeneration.from_pretrained(str(llava_tiny_dir)).state_dict()
    tuned = LlavaForConditionalGeneration.from_pretrained(str(tmp_path / "run" / "model")).state_dict()
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert not any("vision_tower" in k for k in changed)
    assert any("multi_modal_projector" in k for k in changed) and any("lm_head" in k for k in changed)
    assert any("language_model.layers.1.mlp" in k for k in changed)


@pytest.mark.parametrize("args,message", [
    (["--method", "qlora"], "CUDA"),
    (["--method", "full", "--merge"], "--merge"),
    (["--resume"], "no resume state"),
    (["--negative-score", "9"], "--negative-score"),
    (["--lora-target-modules", "(unclosed"], "regex"),
])
def test_user_mistakes_are_one_line_errors(llava_tiny_dir, synth_root, prepared_dir, tmp_path, capsys, monkeypatch,
                                           args, message):
    if "qlora" in args:  # the refusal on a machine without CUDA, simulated where there is a GPU
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train(llava_tiny_dir, synth_root, prepared_dir, tmp_path / "run", *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_shipped_accelerate_configs_parse():
    from accelerate.commands.config.config_args import ClusterConfig

    folder = resources.files("animatch") / "accelerate_configs"
    configs = {p.name: ClusterConfig.from_yaml_file(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}
    kinds = {name: str(c.distributed_type) for name, c in configs.items()}
    assert "MULTI_GPU" in " ".join(kinds.values()) and "DEEPSPEED" in " ".join(kinds.values())
    stages = {c.deepspeed_config.get("zero_stage") for c in configs.values() if c.deepspeed_config}
    assert {2, 3} <= stages
    assert all(c.num_processes >= 2 for c in configs.values())


def test_describe_first_then_judge_on_own_descriptions(llava_tiny_dir, synth_root, prepared_dir, tmp_path):
    """--describe-steps trains descriptions only; then the model describes --own-descriptions training characters
    itself (saved, reused on resume) and the stage-2 examples read those descriptions."""
    out = tmp_path / "run"
    assert train(llava_tiny_dir, synth_root, prepared_dir, out, "--method", "full", "--max-steps", 5,
                 "--describe-steps", 2, "--stage2-context", "own", "--own-descriptions", 6,
                 "--description-style", "keywords", "--score-loss-weight", 5, "--personality-negatives", 0,
                 "--report-to", "none") == 0
    own = json.loads((out / "own_descriptions.json").read_text())
    train_records = load_split(prepared_dir, "train")
    assert len(own) == 6 and all(0 <= int(i) < len(train_records) for i in own)
    seen = json.loads((out / "metrics.json").read_text())["examples_seen"]
    assert seen["description"] >= 4 and seen.get("positive", 0) + seen.get("negative", 0) > 0
    assert (out / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("grouping", [[], ["--group-by-kind", "--group-by-length"]])
def test_phases_describe_then_exact_contexts_then_a_describers_errors_then_its_own(llava_tiny_dir, synth_root,
                                                                                   prepared_dir, tmp_path, grouping):
    cfg = JudgeTrainConfig(data="unused", split_dir="unused", out="unused", description_style="keywords",
                           describe_steps=2, context_noise=0.3, context_noise_from=4, own_context_from=5)
    assert [training_phase(cfg, step) for step in range(7)] == \
        [(True, False, False)] * 2 + [(False, False, False)] * 2 + [(False, True, False)] + [(False, True, True)] * 2
    assert training_phase(JudgeTrainConfig(data="u", split_dir="u", out="u"), 10) == (False, False, False)
    own = JudgeTrainConfig(data="u", split_dir="u", out="u", stage2_context="own", describe_steps=3)
    assert [training_phase(own, step)[2] for step in (2, 3)] == [False, True]
    with pytest.raises(UserError, match="--context-noise-from"):
        JudgeTrainConfig(data="u", split_dir="u", out="u", context_noise_from=3).check()
    with pytest.raises(UserError, match="--own-context-from"):
        JudgeTrainConfig(data="u", split_dir="u", out="u", stage2_context="own", own_context_from=3).check()
    # each phase is an epoch of its own (its own draw of examples); the own descriptions are written when their
    # phase starts; a run resumed inside the last phase reads them back and ends where an uninterrupted one does
    phases = ["--method", "full", "--description-style", "keywords", "--describe-steps", 2, "--context-noise", 0.3,
              "--context-noise-from", 4, "--own-context-from", 5, "--own-descriptions", 4, "--log-every", 1,
              "--report-to", "none", "--save-every", 1, *EXACT, *grouping]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(llava_tiny_dir, synth_root, prepared_dir, straight, *phases, "--max-steps", 7) == 0
    epochs = [r["epoch"] for r in map(json.loads, (straight / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert epochs == [0, 0, 1, 1, 2, 3, 3]
    assert len(json.loads((straight / "own_descriptions.json").read_text())) == 4
    assert train(llava_tiny_dir, synth_root, prepared_dir, resumed, *phases, "--max-steps", 6) == 0
    assert train(llava_tiny_dir, synth_root, prepared_dir, resumed, *phases, "--max-steps", 7, "--resume") == 0
    weights = load_file(str(straight / "model" / "model.safetensors"))
    for key, value in load_file(str(resumed / "model" / "model.safetensors")).items():
        torch.testing.assert_close(value, weights[key], rtol=1e-5, atol=1e-6)


def test_length_groups_batch_examples_of_about_one_length(llava_tiny_dir, synth_root, prepared_dir):
    processor = AutoProcessor.from_pretrained(str(llava_tiny_dir))
    cfg = JudgeTrainConfig(data=str(synth_root), split_dir=str(prepared_dir), out="unused", description_tokens=40,
                           candidate_tokens=32)
    dataset = JudgeExampleDataset(load_split(prepared_dir, "train"), synth_root, processor, cfg, seed=0)
    items = [dataset[i] for i in range(30)]
    collate = ExampleCollator(processor.tokenizer.pad_token_id)
    for by_kind in (False, True):
        batches = LengthGroupCollator(collate, 4, by_kind)(items)
        assert [b["size"] for b in batches] == [4] * 7 + [2]
        rows = [(by_kind and kind == "description", int(n)) for b in batches
                for kind, n in zip(b["kinds"], b["attention_mask"].sum(1))]
        assert rows == sorted(rows)  # every example once, in order of (kind,) length
        assert sorted(n for _, n in rows) == sorted(len(it["input_ids"]) for it in items)
        padded = sum(b["input_ids"].numel() for b in batches)
        assert padded < sum(collate(items[i:i + 4])["input_ids"].numel() for i in range(0, 30, 4))
    one = LengthGroupCollator(collate, 4, False)(items[:4])  # a run of one batch: that batch
    assert len(one) == 1 and one[0]["input_ids"].shape == collate(items[:4])["input_ids"].shape


def test_the_score_digits_weigh_more(llava_tiny_dir, synth_root, prepared_dir):
    processor = AutoProcessor.from_pretrained(str(llava_tiny_dir))
    cfg = JudgeTrainConfig(data=str(synth_root), split_dir=str(prepared_dir), out="unused", score_loss_weight=7.0)
    dataset = JudgeExampleDataset(load_split(prepared_dir, "train"), synth_root, processor, cfg, seed=0)
    n = next(i for i in range(len(dataset)) if dataset.plan.slots[i]["kind"] == "negative")
    item = dataset[n]
    heavy = (item["weights"] == 7.0).nonzero().squeeze(1).tolist()
    assert processor.tokenizer.decode(item["input_ids"][heavy]).strip() == "2"  # the negative score, only it
    answer = item["labels"] != -100
    assert torch.all(item["weights"][~answer] == 0) and set(item["weights"][answer].tolist()) == {1.0, 7.0}


def test_optimizer_is_fused_adamw_with_the_projectors_rate(llava_tiny_dir, synth_root, prepared_dir):
    """`full`: fused AdamW over the language model (decay on matrices only) and the projector at its own rate;
    the vision tower is not in it."""
    cfg = JudgeTrainConfig(data=str(synth_root), split_dir=str(prepared_dir), model=str(llava_tiny_dir),
                           out="unused", method="full", lr=1e-4, projector_lr=1e-3, weight_decay=0.1)
    model, processor = load_trainable(cfg, torch.device("cpu"), "no")
    groups = Trainer(cfg, fresh_accelerator(cpu=True), model, processor, total_steps=10).optimizer.param_groups
    assert all(g["fused"] for g in groups)
    assert [(g["initial_lr"], g["weight_decay"]) for g in groups] == [(1e-4, 0.1), (1e-4, 0.0), (1e-3, 0.0)]
    assert {id(p) for p in groups[2]["params"]} == {id(p) for p in model.model.multi_modal_projector.parameters()}
    optimised = {id(p) for g in groups for p in g["params"]}
    assert not optimised & {id(p) for p in model.model.vision_tower.parameters()}
    assert optimised == {id(p) for p in model.parameters() if p.requires_grad}
