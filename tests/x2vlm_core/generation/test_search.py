"""Search: greedy, beam and sampling against exhaustive references on a table-driven stepper, bans, lengths."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor

from x2vlm_core.generation import DecodeConfig
from x2vlm_core.generation.search import Hypothesis, _repeat_bans, search

END, BANNED = 0, (1,)  # token 0 ends a text; token 1 stands for a special token (never generated)


class TableStepper:
    """Logits of the next token = table[segment, last token] (row V is the start): a Markov chain per segment."""

    def __init__(self, table: Tensor) -> None:
        self.table = table  # [S, V+1, V]
        self.start = table.shape[2]
        self.segment = torch.arange(table.shape[0])
        self.last = torch.full((table.shape[0],), self.start)
        self.calls: list[int] = []  # rows per advance call

    def first(self) -> Tensor:
        return self.table[self.segment, self.last]

    def advance(self, tokens: Tensor, parents: Tensor, segments: Tensor) -> Tensor:
        self.segment = self.segment.index_select(0, parents)
        assert bool((self.segment.unique_consecutive() == self.segment.unique_consecutive()).all())
        self.last = tokens
        self.calls.append(int(tokens.shape[0]))
        return self.table[self.segment, self.last]


def _table(segments: int, vocab: int, seed: int) -> Tensor:
    return torch.randn(segments, vocab + 1, vocab, generator=torch.Generator().manual_seed(seed)) * 2.0


class PairStepper(TableStepper):
    """Logits = table[segment, last token] + table[segment, the token before]: the next token depends on more
    than the last one, so a beam continued from the wrong parent shows."""

    def __init__(self, table: Tensor) -> None:
        super().__init__(table)
        self.before = self.last.clone()

    def first(self) -> Tensor:
        return self.table[self.segment, self.last] + self.table[self.segment, self.before]

    def advance(self, tokens: Tensor, parents: Tensor, segments: Tensor) -> Tensor:
        self.before = self.last.index_select(0, parents)
        super().advance(tokens, parents, segments)
        return self.first()


def _step_logp(table: Tensor, s: int, history: tuple[int, ...], config: DecodeConfig, pairs: bool = False) -> Tensor:
    start = table.shape[2]
    scores = table[s, history[-1] if history else start].clone()
    if pairs:
        scores += table[s, history[-2] if len(history) > 1 else start]
    scores[list(BANNED)] = -math.inf
    if len(history) < config.min_length:
        scores[END] = -math.inf
    bans = _repeat_bans(list(history), config.no_repeat_ngram) if config.no_repeat_ngram else []
    if bans:
        scores[bans] = -math.inf
    return torch.log_softmax(scores, dim=-1)


def _exhaustive(table: Tensor, s: int, config: DecodeConfig, pairs: bool = False) -> Hypothesis:
    """The best hypothesis by brute force over every token sequence."""
    vocab = table.shape[2]
    finished, unfinished = [], []
    for length in range(1, config.max_length + 1):
        for seq in itertools.product(range(vocab), repeat=length):
            if END in seq[:-1]:
                continue
            total = 0.0
            for t in range(length):
                total += float(_step_logp(table, s, seq[:t], config, pairs)[seq[t]])
            if total == -math.inf:
                continue
            if seq[-1] == END:
                finished.append(Hypothesis(seq, total, True))
            elif length == config.max_length:
                unfinished.append(Hypothesis(seq, total, False))
    pool = finished or unfinished
    return max(pool, key=lambda h: h.ranking(config.length_penalty))


def _greedy_reference(table: Tensor, s: int, config: DecodeConfig) -> Hypothesis:
    history: tuple[int, ...] = ()
    total = 0.0
    while len(history) < config.max_length:
        logp = _step_logp(table, s, history, config)
        token = int(logp.argmax())
        total += float(logp[token])
        history = (*history, token)
        if token == END:
            return Hypothesis(history, total, True)
    return Hypothesis(history, total, False)


@pytest.mark.parametrize("min_length,ngram", [(0, 0), (2, 0), (1, 2)])
def test_greedy_follows_the_argmax_chain(min_length: int, ngram: int) -> None:
    table = _table(4, 5, seed=min_length + 10 * ngram)
    config = DecodeConfig(method="greedy", min_length=min_length, max_length=5, no_repeat_ngram=ngram)
    found = search(TableStepper(table), 4, config, END, BANNED)
    for s in range(4):
        assert found[s] == [_greedy_reference(table, s, config)]


@pytest.mark.parametrize("seed", range(4))
def test_wide_beam_search_finds_the_exhaustive_best(seed: int) -> None:
    # 3 usable tokens after the ban: at most 9 live prefixes, so 9 beams keep every one and beam search is exact.
    table = _table(3, 4, seed)
    config = DecodeConfig(method="beam", beams=9, min_length=1, max_length=3)
    found = search(TableStepper(table), 3, config, END, BANNED)
    for s in range(3):
        (best,) = found[s]
        reference = _exhaustive(table, s, config)
        assert best.tokens == reference.tokens
        assert best.log_prob == pytest.approx(reference.log_prob, abs=1e-5)


@pytest.mark.parametrize("seed", [116, 131, 100, 101])
def test_wide_beam_search_is_exact_when_the_next_token_depends_on_the_prefix(seed: int) -> None:
    # Each beam must continue from its own parent (the stepper's rows follow `parents`) and keep its own
    # history; in tables 116 and 131 the best text passes through a beam other than the first. (Exact for
    # length_penalty 0 only: candidates are pooled by summed log p.)
    table = _table(3, 4, seed)
    config = DecodeConfig(method="beam", beams=9, min_length=1, max_length=4)
    found = search(PairStepper(table), 3, config, END, BANNED)
    for s in range(3):
        (best,) = found[s]
        reference = _exhaustive(table, s, config, pairs=True)
        assert best.tokens == reference.tokens
        assert best.log_prob == pytest.approx(reference.log_prob, abs=1e-5)


def test_an_ended_hypothesis_does_not_take_a_live_beams_place() -> None:
    # Start: 2 (p 0.45), end (0.3), 3 (0.25); after 3 the end is certain, after 2 all is uniform. Ranked by mean
    # log p (α 1), "3 end" wins: found only if 3 stays live although "end" ranks above it among 2 beams.
    big = 20.0
    table = torch.full((1, 5, 4), -big)
    table[0, 4, 2], table[0, 4, END], table[0, 4, 3] = math.log(0.45), math.log(0.3), math.log(0.25)
    table[0, 2, :] = 0.0
    table[0, 3, END] = big
    config = DecodeConfig(method="beam", beams=2, min_length=0, max_length=2, length_penalty=1.0)
    (best,) = search(TableStepper(table), 1, config, END, BANNED)[0]
    assert best.tokens == (3, END) == _exhaustive(table, 0, config).tokens
    # One more token allowed: "2 3 end" (mean log p −0.63) beats "3 end" (−0.69) although, when "3 end" and
    # "end" are finished, the live "2 3" (−0.95 per token) looks worse: with α > 0 a live beam's ranking can
    # still rise, so the search must not stop there.
    longer = config.model_copy(update={"max_length": 3})
    (best,) = search(TableStepper(table), 1, longer, END, BANNED)[0]
    assert best.tokens == (2, 3, END) == _exhaustive(table, 0, longer).tokens


def test_beam_search_goes_on_while_a_live_beam_can_win() -> None:
    # After two steps "end" (0.3), "3 end" (0.12) and "2 end" (0.1) are finished, but the live "2 4" (0.4)
    # still beats them all and ends for sure: stopping at two finished hypotheses would return "end".
    big = 20.0
    table = torch.full((1, 6, 5), -big)
    table[0, 5, 2], table[0, 5, END], table[0, 5, 3] = math.log(0.5), math.log(0.3), math.log(0.2)
    table[0, 2, 4], table[0, 2, END] = math.log(0.8), math.log(0.2)
    table[0, 3, END], table[0, 3, 4] = math.log(0.6), math.log(0.4)
    table[0, 4, END] = big
    config = DecodeConfig(method="beam", beams=2, min_length=0, max_length=4)
    (best,) = search(TableStepper(table), 1, config, END, BANNED)[0]
    assert best.tokens == (2, 4, END)
    assert best.log_prob == pytest.approx(math.log(0.4), abs=1e-4)


def test_beam_search_beats_greedy_on_a_garden_path() -> None:
    # From the start, token 2 looks best (p 0.6 vs 0.4 for 3), but after 2 every continuation is poor while
    # 3 → end is certain: greedy walks into the trap, 2 beams do not.
    big = 20.0
    table = torch.full((1, 5, 4), -big)
    table[0, 4, 2], table[0, 4, 3] = math.log(0.6), math.log(0.4)
    table[0, 2, :] = 0.0  # after 2: uniform over 4 tokens
    table[0, 3, END] = big  # after 3: end
    table[0, 2, 1] = -big
    config = DecodeConfig(method="beam", beams=2, min_length=1, max_length=2)
    (beam,) = search(TableStepper(table), 1, config, END, BANNED)[0]
    (greedy,) = search(TableStepper(table), 1, config.model_copy(update={"method": "greedy"}), END, BANNED)[0]
    assert beam.tokens == (3, END)
    assert greedy.tokens[0] == 2
    assert beam.log_prob > greedy.log_prob + 0.5


def test_length_penalty_prefers_the_longer_text() -> None:
    # "end" now: log p −0.80 over 1 token; "3 end": −0.60 − 0.51 = −1.11 over 2 tokens (−0.55 each). Summed
    # log p (α 0) picks the short one, the mean per token (α 1) the long one.
    table = torch.full((1, 5, 4), -30.0)
    table[0, 4, END], table[0, 4, 3] = math.log(0.45), math.log(0.55)
    table[0, 3, END], table[0, 3, 3] = math.log(0.6), math.log(0.4)
    table[0, 0, :] = 0.0
    short = DecodeConfig(method="beam", beams=4, min_length=0, max_length=3, length_penalty=0.0)
    long = short.model_copy(update={"length_penalty": 1.0})
    (a,) = search(TableStepper(table), 1, short, END, BANNED)[0]
    (b,) = search(TableStepper(table), 1, long, END, BANNED)[0]
    assert a.tokens == (END,)
    assert b.tokens == (3, END)


def test_a_text_that_never_ends_stops_at_max_length_unfinished() -> None:
    table = torch.zeros(2, 5, 4)
    table[:, :, END] = -1e9  # the end token is never likely
    for method in ("greedy", "beam", "sample"):
        config = DecodeConfig(method=method, beams=2, samples=3, min_length=0, max_length=4)
        for hyps in search(TableStepper(table), 2, config, END, BANNED, torch.Generator().manual_seed(0)):
            for h in hyps:
                assert not h.finished and len(h.tokens) == 4 and END not in h.tokens


def test_min_length_and_bans_hold() -> None:
    table = torch.zeros(3, 6, 5)
    table[:, :, END] = 5.0  # the end is the favourite at every step
    table[:, :, 1] = 10.0  # and the banned token even more
    config = DecodeConfig(method="beam", beams=3, min_length=3, max_length=6)
    for (h,) in search(TableStepper(table), 3, config, END, BANNED):
        assert h.finished and len(h.tokens) == 4 and 1 not in h.tokens


def test_no_repeat_ngram_blocks_repeats() -> None:
    table = torch.zeros(1, 6, 5)
    table[0, :, 2] = 3.0
    table[0, 2, 3] = 4.0
    table[0, 3, 2] = 4.0  # the chain 2 3 2 3 ... repeats the bigram (2, 3)
    table[0, :, END] = -5.0
    free = DecodeConfig(method="greedy", min_length=0, max_length=6)
    blocked = free.model_copy(update={"no_repeat_ngram": 2})
    (h,) = search(TableStepper(table), 1, free, END, BANNED)[0]
    assert h.tokens[:4] == (2, 3, 2, 3)
    for method in ("greedy", "beam"):
        (h,) = search(TableStepper(table), 1, blocked.model_copy(update={"method": method}), END, BANNED)[0]
        bigrams = list(zip(h.tokens, h.tokens[1:], strict=False))
        assert len(bigrams) == len(set(bigrams)), h.tokens


def test_repeat_bans() -> None:
    assert sorted(_repeat_bans([5, 6, 7, 5, 6], 3)) == [7]
    assert sorted(_repeat_bans([5, 6, 5], 2)) == [6]
    assert _repeat_bans([5, 6], 3) == []


def test_finished_segments_leave_the_batch() -> None:
    table = torch.zeros(3, 5, 4)
    table[0, :, END] = 50.0  # segment 0 ends at once; the others go on to max_length
    table[1:, :, END] = -50.0
    stepper = TableStepper(table)
    search(stepper, 3, DecodeConfig(method="greedy", min_length=0, max_length=4), END, BANNED)
    assert stepper.calls == [2, 2, 2]
    stepper = TableStepper(table)
    search(stepper, 3, DecodeConfig(method="beam", beams=2, min_length=0, max_length=4), END, BANNED)
    # The first step ends only one hypothesis of segment 0 (one prompt row); after the second it holds two
    # that no live beam can beat, and leaves.
    assert stepper.calls == [6, 4, 4]


def test_sampling_is_reproducible_and_follows_the_distribution() -> None:
    table = torch.full((1, 5, 4), -30.0)
    table[0, 4, 2], table[0, 4, 3] = math.log(0.25), math.log(0.75)
    table[0, 2:4, END] = 30.0
    config = DecodeConfig(method="sample", samples=400, min_length=0, max_length=3)
    a = search(TableStepper(table), 1, config, END, BANNED, torch.Generator().manual_seed(1))[0]
    b = search(TableStepper(table), 1, config, END, BANNED, torch.Generator().manual_seed(1))[0]
    assert a == b and len(a) == 400
    share = sum(h.tokens[0] == 3 for h in a) / len(a)
    assert 0.68 < share < 0.82
    assert all(h.log_prob == pytest.approx(math.log(0.75 if h.tokens[0] == 3 else 0.25), abs=1e-4) for h in a)
