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
    TextEncoder,
    TextOutput,
    VideoEncoder,
    VisionEncoder,
    VisionOutput,
)
from x2vlm_core.contracts.losses import LossContext, LossModule, LossOutput, StepState
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
    "LossContext",
    "LossModule",
    "LossOutput",
    "PairSample",
    "QASample",
    "Record",
    "Sample",
    "StepState",
    "TextEncoder",
    "TextOutput",
    "TokenizedText",
    "Tokenizer",
    "VideoEncoder",
    "VisionEncoder",
    "VisionOutput",
]
