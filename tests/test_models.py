import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, CLIPModel, LlavaForConditionalGeneration

from animatch.cli import main
from animatch.errors import UserError
from animatch.models.hub import load_clip, load_clip_processor, load_llava
from animatch.models.tiny import PRESETS, build_tiny

SAME_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "processor_config.json")


def _image(color=(200, 205, 215)) -> Image.Image:
    return Image.new("RGB", (64, 96), color)


@pytest.fixture(scope="module")
def rebuilt_in_other_process(tmp_path_factory):
    """clip-tiny and llava-tiny built again by the CLI in a fresh process (its hash seed differs)."""
    root = tmp_path_factory.mktemp("rebuilt")
    script = ("import sys; from animatch.cli import main; "
              "sys.exit(max(main(['init-model', p, '--out', sys.argv[1] + '/' + p]) "
              "for p in ('clip-tiny', 'llava-tiny')))")
    done = subprocess.run([sys.executable, "-c", script, str(root)], check=False, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def test_clip_tiny_loads_like_a_hub_checkpoint(clip_tiny_dir):
    model = CLIPModel.from_pretrained(clip_tiny_dir)
    processor = AutoProcessor.from_pretrained(clip_tiny_dir)
    texts = ["a girl with silver hair tied into twin tails", "a boy in a black suit"]
    inputs = processor(text=texts, images=[_image(), _image((30, 30, 36))], return_tensors="pt", padding=True)
    assert inputs["pixel_values"].shape == (2, 3, 64, 64)
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits_per_image.shape == (2, 2) and torch.isfinite(out.logits_per_image).all()
    tokenizer = processor.tokenizer
    assert tokenizer.model_max_length == 77 and len(tokenizer) == model.config.text_config.vocab_size
    assert model.config.text_config.eos_token_id == tokenizer.eos_token_id
    # eos pooling: the pooled text state is the hidden state at the end token, not at a fixed position
    ids = tokenizer(["silver hair"], return_tensors="pt")
    with torch.no_grad():
        text_out = model.text_model(**ids)
    end = ids["input_ids"][0].tolist().index(tokenizer.eos_token_id)
    assert torch.allclose(text_out.pooler_output[0], text_out.last_hidden_state[0, end])
    assert model.num_parameters() < 3_000_000


def test_load_clip_returns_eval_model_and_processor(clip_tiny_dir):
    model, processor = load_clip(str(clip_tiny_dir), device="cpu")
    assert not model.training and model.dtype == torch.float32
    feats = model.get_image_features(**processor(images=[_image()], return_tensors="pt")).pooler_output
    assert feats.shape == (1, PRESETS["clip-tiny"]["width"])
    assert load_clip_processor(str(clip_tiny_dir)).tokenizer.eos_token_id == processor.tokenizer.eos_token_id


def test_llava_tiny_generates_from_a_chat_template_prompt(llava_tiny_dir):
    model = LlavaForConditionalGeneration.from_pretrained(llava_tiny_dir)
    processor = AutoProcessor.from_pretrained(llava_tiny_dir)
    conversation = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": "Describe her appearance."}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert prompt == "USER: <image>\nDescribe her appearance. ASSISTANT:"
    inputs = processor(images=[_image()], text=[prompt], return_tensors="pt")
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == model.config.image_seq_length == 64
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4
    assert isinstance(processor.decode(generated[0, inputs["input_ids"].shape[1]:]), str)
    assert 1_500_000 < model.num_parameters() < 3_000_000


def test_load_llava_and_the_chat_template_with_an_image(llava_tiny_dir):
    model, processor = load_llava(str(llava_tiny_dir), device="cpu")
    conversation = [{"role": "user", "content": [{"type": "image", "image": _image()},
                                                 {"type": "text", "text": "What colour is her hair?"}]}]
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert processor.tokenizer.pad_token_id == model.config.pad_token_id != processor.tokenizer.eos_token_id


def test_vision_tower_weights_are_copied(clip_tiny_dir, llava_tiny_dir):
    clip = CLIPModel.from_pretrained(clip_tiny_dir).vision_model.state_dict()
    tower = LlavaForConditionalGeneration.from_pretrained(llava_tiny_dir).model.vision_tower.state_dict()
    assert clip.keys() == tower.keys()
    assert all(torch.equal(clip[k], tower[k]) for k in clip)
    assert json.loads((llava_tiny_dir / "init_model.json").read_text())["vision_tower"] == str(clip_tiny_dir)


@pytest.mark.slow
def test_builds_are_byte_identical_across_processes(clip_tiny_dir, llava_tiny_dir, rebuilt_in_other_process):
    for name in SAME_FILES:
        assert (rebuilt_in_other_process / "clip-tiny" / name).read_bytes() == (clip_tiny_dir / name).read_bytes()
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "chat_template.jinja"):
        assert ((rebuilt_in_other_process / "llava-tiny" / name).read_bytes()
                == (llava_tiny_dir / name).read_bytes()), name


def test_load_errors_are_one_line_user_errors(tmp_path, clip_tiny_dir, llava_tiny_dir, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="Hugging Face cache") as err:
        load_clip("animatch-tests/no-such-model")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="Hugging Face cache"):
        load_llava("animatch-tests/no-such-llava")
    with pytest.raises(UserError, match="no config.json"):
        load_clip(str(tmp_path))
    with pytest.raises(UserError, match="not found"):
        load_clip(str(tmp_path / "missing" / "dir"))
    with pytest.raises(UserError, match="'llava' checkpoint"):
        load_clip(str(llava_tiny_dir))
    with pytest.raises(UserError, match="'clip' checkpoint"):
        load_llava(str(clip_tiny_dir))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((clip_tiny_dir / "config.json").read_text())
    with pytest.raises(UserError, match="cannot load CLIP model"):
        load_clip(str(broken))
    with pytest.raises(UserError, match="CUDA"):
        load_llava(str(llava_tiny_dir), device="cpu", load_in_4bit=True)


def test_init_model_refuses_foreign_dirs_and_bad_presets(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep")
    assert main(["init-model", "clip-tiny", "--out", str(tmp_path)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    with pytest.raises(UserError):
        build_tiny("clip-tiny", tmp_path / "x", vision_tower="some/tower")
    with pytest.raises(UserError, match="unknown preset"):
        build_tiny("clip-huge", tmp_path / "y")
