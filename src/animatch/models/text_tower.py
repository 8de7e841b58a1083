"""CLIP's text tower in NumPy: one text query answered without importing torch or transformers.

`animatch search INDEX "pink hair"` needs one text embedding. Importing torch and transformers' CLIP costs
about 5 s of CPU before the first multiply; the text tower's forward for one short query takes milliseconds.
`NumpyTextTower.load(model)` reads config.json, the tokenizer (`tokenizer.json` through `tokenizers`) and
only the text tower's weights (`model.safetensors` opened with `framework="np"`), and computes what
`CLIPModel.get_text_features` computes, in float32 (pre-norm causal transformer, end-token pooling,
projection). `animatch index` checks it against the full model on the indexed texts and records the result
in index.json; search takes this path only for an index where that check passed. `load` returns None for
whatever it does not cover (no local files, sharded or non-float weights, another activation), and the
caller loads the full model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

PREFIX = "text_model."
ACTIVATIONS = {
    "quick_gelu": lambda x: x / (1.0 + np.exp(-1.702 * x)),
    "gelu": lambda x: 0.5 * x * (1.0 + np.vectorize(math.erf, otypes=[np.float32])(x / math.sqrt(2.0))),
    "gelu_new": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))),
}
ACTIVATIONS["gelu_pytorch_tanh"] = ACTIVATIONS["gelu_new"]
CONFIG_FIELDS = ("hidden_size", "num_attention_heads", "num_hidden_layers", "hidden_act", "layer_norm_eps",
                 "eos_token_id", "max_position_embeddings")
FILES = ("config.json", "tokenizer.json", "model.safetensors")


def _local_files(model: str) -> dict[str, Path] | None:
    """The three files of a checkpoint dir, or of a Hub id already in the local cache; None if any is missing."""
    if Path(model).is_dir():
        paths = {name: Path(model) / name for name in FILES}
        return paths if all(p.is_file() for p in paths.values()) else None
    from huggingface_hub import try_to_load_from_cache

    found = {name: try_to_load_from_cache(model, name) for name in FILES}
    return {k: Path(v) for k, v in found.items()} if all(isinstance(v, str) for v in found.values()) else None


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class NumpyTextTower:
    def __init__(self, config: dict, weights: dict[str, np.ndarray], tokenizer, projection_dim: int):
        self.config, self.weights, self.tokenizer = config, weights, tokenizer
        self.projection_dim = projection_dim
        self.activation = ACTIVATIONS[config["hidden_act"]]

    @classmethod
    def load(cls, model: str) -> NumpyTextTower | None:
        files = _local_files(model)
        if files is None:
            return None
        root = json.loads(files["config.json"].read_text())
        config = root.get("text_config") or {}
        if root.get("model_type") != "clip" or any(config.get(f) is None for f in CONFIG_FIELDS) \
                or config["hidden_act"] not in ACTIVATIONS:
            return None
        from safetensors import safe_open
        from tokenizers import Tokenizer

        weights = {}
        try:
            with safe_open(str(files["model.safetensors"]), framework="np") as f:
                for key in f.keys():
                    if key.startswith(PREFIX) or key == "text_projection.weight":
                        weights[key.removeprefix(PREFIX)] = f.get_tensor(key).astype(np.float32)
        except (TypeError, ValueError, OSError):  # e.g. bfloat16, which NumPy has no type for
            return None
        if "text_projection.weight" not in weights:
            return None
        tokenizer = Tokenizer.from_file(str(files["tokenizer.json"]))
        tokenizer.enable_truncation(int(config["max_position_embeddings"]))
        tokenizer.no_padding()
        return cls(config, weights, tokenizer, int(weights["text_projection.weight"].shape[0]))

    def token_ids(self, text: str) -> list[int]:
        """Token ids as the CLIP tokenizer gives them (start and end tokens, truncated to the max positions)."""
        return self.tokenizer.encode(text).ids

    def embed(self, text: str) -> np.ndarray:
        """[1, projection_dim] L2-normalised embedding of one text, as `embed_texts` gives it."""
        ids = np.asarray(self.token_ids(text))
        w, c = self.weights, self.config
        eps, heads = float(c["layer_norm_eps"]), int(c["num_attention_heads"])
        x = w["embeddings.token_embedding.weight"][ids] + w["embeddings.position_embedding.weight"][:len(ids)]
        causal = np.triu(np.full((len(ids), len(ids)), -np.inf, dtype=np.float32), k=1)
        for n in range(int(c["num_hidden_layers"])):
            p = f"encoder.layers.{n}."
            h = _layer_norm(x, w[p + "layer_norm1.weight"], w[p + "layer_norm1.bias"], eps)
            x = x + self._attention(h, p + "self_attn.", heads, causal)
            h = _layer_norm(x, w[p + "layer_norm2.weight"], w[p + "layer_norm2.bias"], eps)
            x = x + self._linear(self.activation(self._linear(h, p + "mlp.fc1")), p + "mlp.fc2")
        x = _layer_norm(x, w["final_layer_norm.weight"], w["final_layer_norm.bias"], eps)
        # transformers' pooling: the end token; checkpoints with the legacy eos id 2 use the highest id
        end = int(ids.argmax()) if c["eos_token_id"] == 2 else int(np.argmax(ids == c["eos_token_id"]))
        features = x[end] @ w["text_projection.weight"].T
        return (features / np.linalg.norm(features))[None].astype(np.float32)

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.weights[name + ".weight"].T + self.weights[name + ".bias"]

    def _attention(self, h: np.ndarray, p: str, heads: int, causal: np.ndarray) -> np.ndarray:
        tokens, width = h.shape
        q, k, v = (self._linear(h, p + name).reshape(tokens, heads, -1).transpose(1, 0, 2)
                   for name in ("q_proj", "k_proj", "v_proj"))
        scores = q @ k.transpose(0, 2, 1) * (width // heads) ** -0.5 + causal
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        mixed = (scores / scores.sum(-1, keepdims=True)) @ v
        return self._linear(mixed.transpose(1, 0, 2).reshape(tokens, width), p + "out_proj")
