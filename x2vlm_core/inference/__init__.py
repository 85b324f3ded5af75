"""Inference: the pipeline a user loads (`x2vlm_core.load`), its typed results, the index and the server.

    import x2vlm_core
    pipe = x2vlm_core.load("runs/demo")          # a checkpoint or a run directory
    pipe.ground("scene.png", "the red circle")   # → Grounding(box=Box(cx, cy, w, h), score=p(match))

The index (inference/index.py) and the server (inference/server.py) are imported on their own: the server
needs the optional `serve` extra (FastAPI + uvicorn), the index uses faiss when it is installed.
"""

from x2vlm_core.inference.inputs import InputError, InputLimits
from x2vlm_core.inference.pipeline import MissingTaskError, Pipeline, load
from x2vlm_core.inference.results import Box, Classification, Grounding, Hit, Prediction, Retrieval, Scores

__all__ = [
    "Box",
    "Classification",
    "Grounding",
    "Hit",
    "InputError",
    "InputLimits",
    "MissingTaskError",
    "Pipeline",
    "Prediction",
    "Retrieval",
    "Scores",
    "load",
]
