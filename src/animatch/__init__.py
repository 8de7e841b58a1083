"""animatch: match anime characters with descriptions of their looks and personality.

The library behind the `animatch` command: data preparation (`animatch.data`), model loading and tiny
offline checkpoints (`animatch.models`), CLIP training, embedding and search (`animatch.clip`), the LLaVA
judge (`animatch.judge`) and metrics (`animatch.evaluate`).
"""

__version__ = "0.1.0"
