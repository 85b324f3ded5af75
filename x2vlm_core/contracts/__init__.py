"""The plugin contracts: encoders, text, data and losses (and the arguments the core injects into factories)."""

from x2vlm_core.contracts.data import (
    Batch,
    CompositionSample,
    Concept,
    ConceptKind,
    DataSource,
    PairSample,
    QASample,
    Record,
    Sample,
)
from x2vlm_core.contracts.encoders import (
    CHECKPOINT_VAR,
    FusionEncoder,
    FusionOutput,
    LayerSource,
    TextEncoder,
    TextOutput,
    VideoEncoder,
    VisionEncoder,
    VisionOutput,
    VisualMemory,
)
from x2vlm_core.contracts.losses import FusionPairs, Head, LossModule, LossOutput, LossPlan, StepInputs
from x2vlm_core.contracts.text import TokenizedText, Tokenizer

__all__ = [
    "CHECKPOINT_VAR",
    "Batch",
    "CompositionSample",
    "Concept",
    "ConceptKind",
    "DataSource",
    "FusionEncoder",
    "FusionOutput",
    "FusionPairs",
    "Head",
    "LayerSource",
    "LossModule",
    "LossOutput",
    "LossPlan",
    "PairSample",
    "QASample",
    "Record",
    "Sample",
    "StepInputs",
    "TextEncoder",
    "TextOutput",
    "TokenizedText",
    "Tokenizer",
    "VideoEncoder",
    "VisionEncoder",
    "VisionOutput",
    "VisualMemory",
]
