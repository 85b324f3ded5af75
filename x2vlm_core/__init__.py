"""x2vlm_core: the X²-VLM model, objectives, training, checkpoints, inference and CLI.

Paper: Zeng et al., "X²-VLM: All-In-One Pre-trained Model For Vision-Language Tasks", TPAMI 2023.
Builds plugins by name through `registry`; never imports `plugins`.

`x2vlm_core.load(checkpoint)` returns an inference Pipeline (x2vlm_core/inference); it is imported on first
use, so `import x2vlm_core` stays cheap (no torch).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def __getattr__(name: str) -> Any:
    # Lazy: the pipeline pulls in torch and the model; most imports of x2vlm_core need neither.
    if name == "load":
        from x2vlm_core.inference.pipeline import load

        return load
    raise AttributeError(f"module 'x2vlm_core' has no attribute {name!r}")
