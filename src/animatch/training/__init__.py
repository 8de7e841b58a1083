"""Training machinery shared by `train` (CLIP) and `judge-train` (LLaVA): what a run sets for the process
(`runtime`), its checkpoints and exact resume (`checkpoint`), and its metrics log (`metrics`). The two loops
differ in model, data and loss; how a run starts, saves, resumes and logs is written once, here.
"""
