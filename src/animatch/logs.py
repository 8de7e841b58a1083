"""Quiet library output, so a command shows one progress bar per phase of ours and nothing else.

transformers and huggingface_hub draw their own bars ("Loading weights" on every model load, "Writing model
shards" on every save, interleaved with our training bar) and print deprecation warnings a user cannot act
on. `quiet_libraries()` is called once by the CLI before any job module is imported, unless `--verbose`: it
sets the libraries' own switches through the environment (read when they are imported, so nothing heavy is
imported here, and inherited by data-loader workers and `accelerate launch` children), switches off the bars
of libraries a Python caller has already imported, and filters the known warnings by their exact text.
Library warnings and errors that are not listed here still show.
"""

from __future__ import annotations

import os
import sys
import warnings

QUIET_ENVIRONMENT = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub's bars; transformers' bars follow this switch
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",  # transformers' warning_advice() hints
}
# (category, start of the message): warnings raised inside the libraries about their own internals.
KNOWN_WARNINGS = (
    # peft calls the deprecated property when a LLaVA is wrapped or an adapter loaded (judge-train, judge-eval)
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
)


def quiet_libraries() -> None:
    """Silence library progress bars and the known library warnings for this process and its children."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.disable_progress_bar()
