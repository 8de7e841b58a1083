"""animatch: match anime characters with descriptions of their looks and personality.

The library behind the `animatch` command: data preparation (`animatch.data`), model loading and tiny
offline checkpoints (`animatch.models`), CLIP training, embedding and search (`animatch.clip`), the LLaVA
judge (`animatch.judge`) and metrics (`animatch.evaluate`).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so `import animatch` (and `animatch --help`) does not import torch and faiss.
    if name == "Matcher":
        from animatch.clip.matcher import Matcher

        return Matcher
    raise AttributeError(f"module 'animatch' has no attribute {name!r}")
