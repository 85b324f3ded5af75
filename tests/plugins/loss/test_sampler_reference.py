"""Independent reference for sample_hard_negatives: empirical negative frequencies ∝ softmax(sim / τ) over
the non-positive pairs, in both directions, on a setup where sim / τ is a known matrix.

Setup: text_feat rows are the unit vectors e_j (plus a zero slack column), image_feat rows are
(τ·LOGITS[i], slack) with the slack making each row unit-norm, so image_feat @ text_feat.T = τ·LOGITS and
sim / τ = LOGITS exactly, while the features stay normalised like a model's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from plugins.loss.matching import sample_hard_negatives

TAU = 0.1
# sim / τ for 6 concepts (rows) × 6 texts (columns); deliberately not symmetric, so the two directions
# (text for a concept: a row; concept for a text: a column) have different distributions.
LOGITS = torch.tensor(
    [
        [3.0, 3.0, 1.0, -1.0, 2.0, 3.0],
        [3.0, 3.0, 0.0, 2.0, -2.0, 1.0],
        [2.0, -1.0, 3.0, 3.0, 1.0, 0.0],
        [-2.0, 1.0, 3.0, 3.0, 0.0, 2.0],
        [1.0, 0.0, 2.0, -1.0, 3.0, 3.0],
        [3.0, -1.0, 1.0, 2.0, 3.0, 3.0],
    ]
)
# Pairs sharing a visual id or a text id are positives:
#   row 0: {0, 1} by visual 0, {0, 5} by text 10 → {0, 1, 5};  row 1: {0, 1}
#   rows 2, 3: {2, 3} by text 12;  row 4: {4, 5} by visual 3;  row 5: {4, 5} ∪ {0, 5} → {0, 4, 5}
VISUAL_ID = torch.tensor([0, 0, 1, 2, 3, 3])
TEXT_ID = torch.tensor([10, 11, 12, 12, 13, 10])
POSITIVE = torch.tensor(
    [
        [1, 1, 0, 0, 0, 1],
        [1, 1, 0, 0, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 1, 1],
        [1, 0, 0, 0, 1, 1],
    ],
    dtype=torch.bool,
)
DRAWS = 1000  # per seed
SEEDS = (0, 1, 2)
Z_MAX = 5.0  # per-entry tolerance in binomial standard deviations (72 entries: false alarms ~1e-5)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # 20k calls on 6×6 tensors: thread hand-offs, not arithmetic, would dominate on a shared machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _features() -> tuple[torch.Tensor, torch.Tensor]:
    """(image_feat [6, 7], text_feat [6, 7]), both unit-norm rows, with image_feat @ text_feat.T = τ·LOGITS."""
    a = TAU * LOGITS.double()
    slack = (1.0 - (a * a).sum(1, keepdim=True)).sqrt()
    image = torch.cat((a, slack), 1).float()
    text = torch.cat((torch.eye(6), torch.zeros(6, 1)), 1)
    return image, text


def _allowed_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax over the non-positive columns (positives get probability 0), written out by hand."""
    weights = torch.where(POSITIVE, torch.zeros_like(logits), logits.double().exp())
    return weights / weights.sum(1, keepdim=True)


def _sigma(p: torch.Tensor, n: int) -> torch.Tensor:
    # Floor keeps zero-probability entries (positives) from dividing by zero; they are checked exactly.
    return (p * (1 - p) / n).sqrt().clamp_min(1e-4)


def _draw() -> tuple[torch.Tensor, torch.Tensor]:
    """Counts [6 concepts, 6 texts] of text_for_concept and [6 texts, 6 concepts] of concept_for_text."""
    image, text = _features()
    text_counts = torch.zeros(6, 6, dtype=torch.long)
    concept_counts = torch.zeros(6, 6, dtype=torch.long)
    rows = torch.arange(6)
    for seed in SEEDS:
        g = torch.Generator().manual_seed(seed)
        for _ in range(DRAWS):
            neg = sample_hard_negatives(image, text, VISUAL_ID, TEXT_ID, torch.tensor(TAU), generator=g)
            text_counts[rows, neg.text_for_concept] += 1
            concept_counts[rows, neg.concept_for_text] += 1
    return text_counts, concept_counts


def test_reference_setup_gives_the_intended_logits() -> None:
    image, text = _features()
    torch.testing.assert_close(image.norm(dim=1), torch.ones(6))
    torch.testing.assert_close(image @ text.T / TAU, LOGITS, atol=1e-5, rtol=0)
    expected = (VISUAL_ID[:, None] == VISUAL_ID[None]) | (TEXT_ID[:, None] == TEXT_ID[None])
    assert torch.equal(expected, POSITIVE)


def test_negative_frequencies_follow_softmax_of_sim_over_tau_both_directions() -> None:
    text_counts, concept_counts = _draw()
    n = DRAWS * len(SEEDS)
    # Positives never drawn, in either direction (POSITIVE is symmetric: the same pairs).
    assert int(text_counts[POSITIVE].sum()) == 0
    assert int(concept_counts[POSITIVE.T].sum()) == 0

    expected_text = _allowed_softmax(LOGITS)  # row i: concept i's distribution over texts
    expected_concept = _allowed_softmax(LOGITS.T)  # row j: text j's distribution over concepts
    for counts, expected in ((text_counts, expected_text), (concept_counts, expected_concept)):
        freq = counts.double() / n
        z = (freq - expected).abs() / _sigma(expected, n)
        assert float(z.max()) < Z_MAX, f"frequencies off by {float(z.max()):.1f} σ:\n{freq}\nexpected\n{expected}"

    # The tolerance is tight enough to reject the plausible mistakes: sampling ∝ exp(sim) (no / τ),
    # ∝ exp(sim / τ²), ∝ exp(-sim / τ), or each direction from the other's matrix.
    mistakes = {
        "no temperature": (_allowed_softmax(LOGITS * TAU), _allowed_softmax(LOGITS.T * TAU)),
        "temperature twice": (_allowed_softmax(LOGITS / TAU), _allowed_softmax(LOGITS.T / TAU)),
        "negated sim": (_allowed_softmax(-LOGITS), _allowed_softmax(-LOGITS.T)),
        "directions swapped": (_allowed_softmax(LOGITS.T), _allowed_softmax(LOGITS)),
    }
    for name, (wrong_text, wrong_concept) in mistakes.items():
        worst = max(
            float(((wrong_text - expected_text).abs() / _sigma(expected_text, n)).max()),
            float(((wrong_concept - expected_concept).abs() / _sigma(expected_concept, n)).max()),
        )
        assert worst > 4 * Z_MAX, f"{name} would go unnoticed ({worst:.1f} σ)"


def test_same_seed_same_draws() -> None:
    image, text = _features()

    def run(seed: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(20):
            neg = sample_hard_negatives(image, text, VISUAL_ID, TEXT_ID, torch.tensor(TAU), generator=g)
            out.append(neg.text_for_concept.tolist() + neg.concept_for_text.tolist())
        return out

    assert run(7) == run(7)
    assert run(7) != run(8)
