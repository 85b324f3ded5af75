"""The one surface a plugin imports: contracts, registration, tokenizers, weight loading, record helpers, boxes.

A plugin module needs nothing else from x2vlm (tests/test_boundaries.py enforces it):

    from x2vlm_core.plugin_api import PluginSpec, VisionEncoder, VisionOutput, hookimpl
"""

from registry import ConfigError, PluginError, PluginSpec, hookimpl
from x2vlm_core.checkpoint.weights import WeightsError, load_state_file, load_state_strict
from x2vlm_core.contracts import (
    CHECKPOINT_VAR,
    Batch,
    Concept,
    ConceptKind,
    DataSource,
    FusionEncoder,
    FusionOutput,
    LossContext,
    LossModule,
    LossOutput,
    Sample,
    StepState,
    TextEncoder,
    TextOutput,
    TokenizedText,
    Tokenizer,
    VideoEncoder,
    VisionEncoder,
    VisionOutput,
)
from x2vlm_core.contracts.factories import INJECTED, KINDS
from x2vlm_core.data.records import (
    BadRecord,
    DataError,
    RecordSource,
    SkipCounter,
    clean_texts,
    expand_paths,
    load_image,
    parse_json_line,
    pixel_box_to_normalised,
    read_json,
    read_lines,
    record_shard,
)
from x2vlm_core.data.tokenizer import FastTokenizer, load_tokenizer
from x2vlm_core.data.video import decode_video
from x2vlm_core.model.boxes import box_iou_aligned, cxcywh_to_xyxy, generalized_box_iou_aligned

__all__ = [
    "CHECKPOINT_VAR",
    "INJECTED",
    "KINDS",
    "BadRecord",
    "Batch",
    "Concept",
    "ConceptKind",
    "ConfigError",
    "DataError",
    "DataSource",
    "FastTokenizer",
    "FusionEncoder",
    "FusionOutput",
    "LossContext",
    "LossModule",
    "LossOutput",
    "PluginError",
    "PluginSpec",
    "RecordSource",
    "Sample",
    "SkipCounter",
    "StepState",
    "TextEncoder",
    "TextOutput",
    "TokenizedText",
    "Tokenizer",
    "VideoEncoder",
    "VisionEncoder",
    "VisionOutput",
    "WeightsError",
    "box_iou_aligned",
    "clean_texts",
    "cxcywh_to_xyxy",
    "decode_video",
    "expand_paths",
    "generalized_box_iou_aligned",
    "hookimpl",
    "load_image",
    "load_state_file",
    "load_state_strict",
    "load_tokenizer",
    "parse_json_line",
    "pixel_box_to_normalised",
    "read_json",
    "read_lines",
    "record_shard",
]
