"""Older checkpoint formats, read as the current one: a tested key mapping per format version.

Version 1 (x2vlm 0.1) stored the heads under the model's own attribute names (`itm_head.*`, `bbox_head.*`,
`mlm_head.*`, next to `vision_proj.*`, `text_proj.*`, `temp`, `text_to_fusion.*`); version 2 stores the
Heads module (`itm.*`, `bbox.*`, `mlm.*`, the rest unchanged). The encoder parts are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from x2vlm_core.checkpoint.format import Alias

__all__ = ["HEADS_V1_TO_V2", "upgrade_aliases", "upgrade_key", "upgrade_part_state"]

# Key prefixes of the heads part that changed from version 1 to 2.
HEADS_V1_TO_V2: tuple[tuple[str, str], ...] = (("itm_head.", "itm."), ("bbox_head.", "bbox."), ("mlm_head.", "mlm."))

T = TypeVar("T")


def upgrade_key(version: int, part: str, key: str) -> str:
    """A state-dict key of `part` written by format `version` → its name in the current format."""
    if version < 2 and part == "heads":
        for old, new in HEADS_V1_TO_V2:
            if key.startswith(old):
                return new + key[len(old):]
    return key


def upgrade_part_state(version: int, part: str, state: Mapping[str, T]) -> dict[str, T]:
    """Every key of a part's state dict (tensors, or anything keyed like it) renamed to the current format."""
    return {upgrade_key(version, part, k): v for k, v in state.items()}


def upgrade_aliases(version: int, part: str, aliases: Mapping[str, Alias]) -> dict[str, Alias]:
    """A part's aliases with both ends renamed to the current format."""
    return {
        upgrade_key(version, part, key): Alias(part=a.part, key=upgrade_key(version, a.part, a.key))
        for key, a in aliases.items()
    }
