"""Training machinery shared by `train` (CLIP) and `judge-train` (LLaVA): what a run sets for the process and
its metrics log (`runtime`), its checkpoints and exact resume (`checkpoint`). The two loops differ in model,
data and loss; how a run starts, saves, resumes and logs is written once, here, so `judge/` needs nothing
from `clip/`.
"""
