"""The X²-VLM nn.Modules: the model, its heads, visual concepts, boxes, distributed gather, precision."""

from x2vlm_core.model.x2vlm import X2VLM, BboxHead, MlmHead, ModelOutput, build_losses, build_modules

__all__ = ["X2VLM", "BboxHead", "MlmHead", "ModelOutput", "build_losses", "build_modules"]
