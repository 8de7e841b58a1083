"""animatch: match anime characters with descriptions of their looks and personality.

The library behind the `animatch` command. Start with `animatch.Matcher` (`Matcher.from_index("index/")` for
search, `Matcher.from_model("runs/clip/best")` for matching; the README's "Python API" has a runnable example).
Below it: data preparation (`animatch.data`), model loading and tiny offline checkpoints (`animatch.models`),
CLIP training, embedding and search (`animatch.clip`), the LLaVA judge (`animatch.judge.judge.Judge`) and
metrics (`animatch.evaluate`).
"""

__version__ = "0.1.0"
__all__ = ["Matcher", "__version__"]


def __getattr__(name: str):
    # Lazy, so `import animatch` (and `animatch --help`) does not import torch and faiss.
    if name == "Matcher":
        from animatch.clip.matcher import Matcher

        return Matcher
    raise AttributeError(f"module 'animatch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "Matcher"])
