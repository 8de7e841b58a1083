"""Does a CLIP vision tower see the attributes a judge must name? A linear probe per synthetic attribute.

On `animatch synth` data the drawn attributes are known. For each one, a logistic regression (scikit-learn,
installed with the `judge` extra through sentence-transformers) is fit on the tower's features of the first
`--train` images of the metadata and scored on the next `--test`: the flattened patch features of layer -2
(what LLaVA's projector reads, `vision_feature_layer` -2, CLS dropped) and, for comparison, the pooled and
projected image embedding (what CLIP retrieval compares). If the patch features name an attribute and the judge's
descriptions do not, the judge has not learnt to read it yet; the tower is not what limits it.

Usage: .venv/bin/python bench/tower_probe.py --data ROOT --model CLIP_DIR [--train 4000] [--test 1000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from transformers import CLIPImageProcessor, CLIPModel

from animatch.data.images import load_image
from animatch.data.synth_text import DESCRIBED


@torch.inference_mode()
def features(model: CLIPModel, processor: CLIPImageProcessor, paths: list[Path]) -> dict[str, np.ndarray]:
    out: dict[str, list[torch.Tensor]] = {"patches (layer -2)": [], "pooled embedding": []}
    for start in range(0, len(paths), 250):
        pixels = processor(images=[load_image(p) for p in paths[start:start + 250]], return_tensors="pt")
        vision = model.vision_model(pixel_values=pixels["pixel_values"], output_hidden_states=True)
        out["patches (layer -2)"].append(vision.hidden_states[-2][:, 1:].flatten(1))
        out["pooled embedding"].append(model.visual_projection(vision.pooler_output))
    return {name: torch.cat(chunks).numpy() for name, chunks in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a dataset written by `animatch synth`")
    parser.add_argument("--model", required=True, help="a CLIP checkpoint dir")
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=1000)
    args = parser.parse_args()
    root = Path(args.data)
    lines = (root / "metadata.jsonl").read_text().splitlines()[:args.train + args.test]
    records = [json.loads(line) for line in lines]
    model = CLIPModel.from_pretrained(args.model).eval()
    processor = CLIPImageProcessor.from_pretrained(args.model)
    feats = features(model, processor, [root / r["file_name"] for r in records])
    train, test = slice(0, args.train), slice(args.train, len(records))
    print(f"held-out accuracy of a linear probe ({args.train} training images, {len(records) - args.train} held out)")
    for attribute in DESCRIBED:
        labels = np.array([r["attributes"][attribute] for r in records])
        row = []
        for name, x in feats.items():
            x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
            probe = LogisticRegression(max_iter=1000, C=0.1).fit(x[train], labels[train])
            row.append(f"{name} {probe.score(x[test], labels[test]):.3f}")
        print(f"{attribute:13} " + ", ".join(row))


if __name__ == "__main__":
    main()
