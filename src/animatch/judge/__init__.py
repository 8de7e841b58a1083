"""The LLaVA judge: given an anime character image and an English text, describe the image (stage 1), then
score how well the text describes the character (stage 2, `Score: <1-10>` + `Analysis: ...`).

`prompts` holds the conversations shared with fine-tuning, `parse` reads scores out of model output,
`language` rejects non-English text, `loading` loads the model (plus an optional LoRA adapter and projector),
`judge` runs the two stages with stage-1 KV-cache reuse, and `cli` is the `animatch judge` command.
"""
