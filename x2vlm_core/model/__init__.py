"""The X²-VLM nn.Modules: the model, its heads, the training step, visual concepts, boxes, distributed gather,
precision. `x2vlm_core.model.factory` (imported on its own) builds them from config."""

from x2vlm_core.model.heads import BboxHead, Heads, HeadSizes, MlmHead
from x2vlm_core.model.step import ModelOutput, TaskStep, TrainingStep
from x2vlm_core.model.x2vlm import PARTS, X2VLM, TextEncoding

__all__ = ["PARTS", "X2VLM", "BboxHead", "HeadSizes", "Heads", "MlmHead", "ModelOutput", "TaskStep", "TextEncoding", "TrainingStep"]
