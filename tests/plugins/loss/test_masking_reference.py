"""Independent reference for mask_tokens on a hand-built batch: whole words, k per row, specials and pads
never chosen, 80/10/10 corruption, labels at the layout positions.

Ids 0..4 are [PAD] [CLS] [SEP] [MASK] [UNK]; word_ids follow a fast tokenizer's word_ids() with None → -1.
"""

from __future__ import annotations

import pytest
import torch

from plugins.loss.mlm import MaskedText, MlmLossConfig, mask_tokens
from x2vlm_core.contracts import TokenizedText

SPECIAL = (0, 1, 2, 3, 4)
MASK_ID = 3
VOCAB = 40
ORDINARY = VOCAB - len(SPECIAL)  # ids a random replacement may take

# Each row: (ids, word_ids, real length); L = 12, mask = position < real length.
ROWS = [
    # A: [CLS] w0 | w1 w1 | w2 w2 w2 | w3 [SEP] pad pad pad — words of 1, 2, 3, 1 sub-tokens; 7 candidates
    ([1, 11, 12, 13, 14, 15, 16, 17, 2, 0, 0, 0], [-1, 0, 1, 1, 2, 2, 2, 3, -1, -1, -1, -1], 9),
    # B: [CLS] w0 w0 | w1 | [UNK] | w3 w3 w3 | w4 | w5 w5 [SEP] — [UNK] keeps its word id but is special; 9 candidates
    ([1, 20, 21, 22, 4, 23, 24, 25, 26, 27, 28, 2], [-1, 0, 0, 1, 2, 3, 3, 3, 4, 5, 5, -1], 12),
    # C: six one-token words; 6 candidates
    ([1, 30, 31, 32, 33, 34, 35, 2, 0, 0, 0, 0], [-1, 0, 1, 2, 3, 4, 5, -1, -1, -1, -1, -1], 8),
    # D: specials only; nothing to choose
    ([1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [-1] * 12, 2),
    # E: one word of three sub-tokens; 3 candidates
    ([1, 36, 37, 38, 2, 0, 0, 0, 0, 0, 0, 0], [-1, 0, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1], 5),
    # F: [CLS] [LANG] w0 w0 | w1 [SEP] — a prompt token with an ordinary id but no word (word id -1); 3 candidates
    ([1, 39, 5, 6, 7, 2, 0, 0, 0, 0, 0, 0], [-1, -1, 0, 0, 1, -1, -1, -1, -1, -1, -1, -1], 6),
    # G: [CLS] w0 | w1 w1 [SEP], then padding a collator filled with an ordinary id and a word id: only the
    # mask says it is padding; 3 candidates
    ([1, 8, 9, 10, 2, 9, 9, 9, 9, 9, 9, 9], [-1, 0, 1, 1, -1, 2, 2, 2, 2, 2, 2, 2], 5),
]
CANDIDATES = [7, 9, 6, 0, 3, 3, 3]
# Token positions of each candidate word, per row.
WORDS = [
    [{1}, {2, 3}, {4, 5, 6}, {7}],
    [{1, 2}, {3}, {5, 6, 7}, {8}, {9, 10}],
    [{1}, {2}, {3}, {4}, {5}, {6}],
    [],
    [{1, 2, 3}],
    [{2, 3}, {4}],
    [{1}, {2, 3}],
]


def _k(ratio: float, max_masks: int, count: int) -> int:
    """k = min(max_masks, max(1, round(ratio · count))), 0 for a row without candidates. The ratios used
    here never put ratio · count on a .5, where rounding conventions differ."""
    return min(max_masks, max(1, round(ratio * count))) if count else 0


def _batch(repeats: int) -> TokenizedText:
    """ROWS repeated `repeats` times, row r of copy c at index c·len(ROWS) + r."""
    ids = torch.tensor([ids for ids, _, _ in ROWS]).repeat(repeats, 1)
    word_ids = torch.tensor([w for _, w, _ in ROWS]).repeat(repeats, 1)
    real = torch.tensor([n for _, _, n in ROWS]).repeat(repeats)
    mask = torch.arange(ids.shape[1])[None] < real[:, None]
    return TokenizedText(ids=ids, mask=mask, word_ids=word_ids)


def _chosen_sets(masked: MaskedText) -> list[set[int]]:
    """Per row, the positions of the valid layout slots; each position at most once."""
    out = []
    for positions, valid in zip(masked.positions.tolist(), masked.valid.tolist(), strict=True):
        picked = [p for p, v in zip(positions, valid, strict=True) if v]
        assert len(picked) == len(set(picked)), f"a position appears twice in the layout: {positions}"
        out.append(set(picked))
    return out


def _mask(text: TokenizedText, config: MlmLossConfig, seed: int = 0) -> MaskedText:
    return mask_tokens(text, SPECIAL, VOCAB, MASK_ID, config, torch.Generator().manual_seed(seed))


def test_hand_counts_match_the_rows() -> None:
    text = _batch(1)
    special = torch.isin(text.ids, torch.tensor(SPECIAL))
    assert (text.mask & (text.word_ids >= 0) & ~special).sum(1).tolist() == CANDIDATES
    assert text.mask.sum(1).tolist() == [n for _, _, n in ROWS]
    for row, words in enumerate(WORDS):
        assert sum(len(w) for w in words) == CANDIDATES[row]


@pytest.mark.parametrize(("ratio", "max_masks"), [(0.4, 5), (0.6, 12), (0.6, 3), (0.15, 2)])
def test_token_level_chooses_exactly_k_candidates(ratio: float, max_masks: int) -> None:
    text = _batch(40)
    config = MlmLossConfig(mask_ratio=ratio, max_masks=max_masks, whole_word=False)
    sets = _chosen_sets(_mask(text, config))
    allowed = [set().union(*words) for words in WORDS]
    for i, chosen in enumerate(sets):
        row = i % len(ROWS)
        assert chosen <= allowed[row], f"row {row}: chose a special, pad or [UNK]: {sorted(chosen - allowed[row])}"
        assert len(chosen) == _k(ratio, max_masks, CANDIDATES[row])


def test_whole_words_all_sub_tokens_and_at_most_k() -> None:
    # ratio 0.4: k = 3 (7 cand.), 4 (9), 2 (6), 0, 1 (3; its one word has 3 sub-tokens, chosen whole), 1, 1.
    config = MlmLossConfig(mask_ratio=0.4, max_masks=5, whole_word=True)
    ks = [_k(0.4, 5, c) for c in CANDIDATES]
    assert ks == [3, 4, 2, 0, 1, 1, 1]
    repeats = 400
    sets = _chosen_sets(_mask(_batch(repeats), config))
    seen_words: list[set[int]] = [set() for _ in ROWS]
    for i, chosen in enumerate(sets):
        row = i % len(ROWS)
        words = WORDS[row]
        picked = [w for w, word in enumerate(words) if word & chosen]
        for w in picked:  # a touched word is chosen with all its sub-tokens
            assert words[w] <= chosen, f"row {row}: word {sorted(words[w])} only partly chosen: {sorted(chosen)}"
        assert chosen == set().union(*(words[w] for w in picked)), f"row {row}: chose a non-candidate {chosen}"
        if not words:
            assert chosen == set()
            continue
        assert picked, f"row {row}: nothing chosen though it has words"
        # Whole words fit in k; the only exception is a single first word longer than k.
        assert len(chosen) <= ks[row] or len(picked) == 1, f"row {row}: {len(chosen)} tokens > k = {ks[row]}"
        seen_words[row].update(picked)
        if all(len(w) == 1 for w in words):  # one-token words: exactly k
            assert len(chosen) == ks[row]
    # Random order: over the repeats every word of every row gets chosen at some point.
    assert seen_words == [set(range(len(words))) for words in WORDS]


def test_whole_words_take_everything_when_k_covers_the_row() -> None:
    config = MlmLossConfig(mask_ratio=1.0, max_masks=12, whole_word=True)
    sets = _chosen_sets(_mask(_batch(20), config))
    for i, chosen in enumerate(sets):
        row = i % len(ROWS)
        assert chosen == set().union(*WORDS[row])


def test_word_longer_than_max_masks_is_truncated_to_max_masks() -> None:
    # Row E's only word has 3 sub-tokens; with max_masks = 2 two of them, and nothing else, are chosen.
    config = MlmLossConfig(mask_ratio=0.4, max_masks=2, whole_word=True)
    text = _batch(50)
    masked = _mask(text, config)
    sets = _chosen_sets(masked)
    for chosen in sets[4 :: len(ROWS)]:
        assert len(chosen) == 2 and chosen <= WORDS[4][0]
    for i, chosen in enumerate(sets):
        row = i % len(ROWS)
        assert len(chosen) <= 2, f"row {row}: {len(chosen)} slots > max_masks"
        touched = [word for word in WORDS[row] if word & chosen]
        # Only a lone word may be cut; several words are all whole (row B: k = 2 by the cap).
        assert len(touched) == 1 or all(word <= chosen for word in touched), f"row {row}: {sorted(chosen)}"
        # The sub-token left out is not predicted, so it must not be corrupted either.
        changed = set((masked.ids[i] != text.ids[i]).nonzero().flatten().tolist())
        assert changed <= chosen, f"row {i % len(ROWS)}: corrupted {sorted(changed - chosen)} outside the layout"


@pytest.mark.parametrize("whole_word", [True, False])
def test_labels_are_the_original_ids_and_only_chosen_tokens_change(whole_word: bool) -> None:
    text = _batch(60)
    config = MlmLossConfig(mask_ratio=0.4, max_masks=5, whole_word=whole_word)
    masked = _mask(text, config, seed=3)
    length = text.ids.shape[1]
    assert masked.positions.shape == masked.labels.shape == masked.valid.shape == (text.ids.shape[0], 5)
    assert int(masked.positions.min()) >= 0 and int(masked.positions.max()) < length
    sets = _chosen_sets(masked)
    for i, chosen in enumerate(sets):
        original, corrupted = text.ids[i].tolist(), masked.ids[i].tolist()
        for slot, (pos, valid) in enumerate(zip(masked.positions[i].tolist(), masked.valid[i].tolist(), strict=True)):
            if valid:
                assert int(masked.labels[i, slot]) == original[pos]
        changed = {p for p in range(length) if corrupted[p] != original[p]}
        assert changed <= chosen, f"row {i}: unchosen positions {sorted(changed - chosen)} were altered"


def test_corruption_is_80_10_10() -> None:
    text = _batch(1200)  # about 14k chosen tokens
    config = MlmLossConfig(mask_ratio=0.4, max_masks=5, whole_word=True)
    masked = _mask(text, config, seed=11)
    chosen = torch.zeros_like(text.ids, dtype=torch.bool)
    for i, picked in enumerate(_chosen_sets(masked)):
        chosen[i, list(picked)] = True
    before, after = text.ids[chosen], masked.ids[chosen]
    n = before.numel()
    to_mask = after == MASK_ID
    kept = after == before
    to_random = ~to_mask & ~kept
    # A random replacement equals the original 1 time in ORDINARY; that share counts as "kept".
    expected = {
        "mask": 0.8,
        "kept": 0.1 + 0.1 / ORDINARY,
        "random": 0.1 * (ORDINARY - 1) / ORDINARY,
    }
    observed = {"mask": to_mask, "kept": kept, "random": to_random}
    for name, p in expected.items():
        freq = float(observed[name].double().mean())
        sigma = (p * (1 - p) / n) ** 0.5
        assert abs(freq - p) < 5 * sigma, f"{name}: {freq:.4f} vs {p:.4f} over {n} chosen tokens"
    replaced = after[to_random]
    assert not bool(torch.isin(replaced, torch.tensor(SPECIAL)).any()), "a random replacement is a special id"
    assert int(replaced.min()) >= len(SPECIAL) and int(replaced.max()) < VOCAB
    # Uniform over the ordinary ids: every one of them shows up, none more than ~3× its share.
    counts = torch.bincount(replaced, minlength=VOCAB)[len(SPECIAL) :]
    share = replaced.numel() / ORDINARY
    assert int((counts > 0).sum()) == ORDINARY and float(counts.max()) < 3 * share
