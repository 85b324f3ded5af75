"""Search over a Stepper: greedy, beam search and sampling, batched over visual segments.

Shapes: S segments (visuals) still being decoded, G rows per segment (1 greedy, `beams`, or `samples`), R = S·G
rows, V vocabulary. Per step the logits get the bans (special tokens always; the end token before
`min_length`; tokens that would repeat an n-gram of size `no_repeat_ngram`), then:

- greedy / sample: each row takes its argmax / a draw; a row ends at the end token; a segment leaves the batch
  when all its rows ended (rows of a live segment keep being fed, their outputs ignored);
- beam: the 2·G best (beam, token) continuations of a segment are ranked by summed log p; each ending in the
  end token becomes a finished hypothesis, the G best others go on; a segment stops when it has G finished
  hypotheses none of its live beams can beat (by log p / length^length_penalty, the live ones bounded at
  max_length when length_penalty > 0).
At `max_length` every live hypothesis stops unfinished; a segment's answer is its best finished hypothesis, or
its best unfinished one (reported with finished=False) when none ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from x2vlm_core.generation.config import DecodeConfig
from x2vlm_core.generation.steppers import Stepper

__all__ = ["Hypothesis", "search"]

_NEG = float("-inf")


@dataclass(frozen=True)
class Hypothesis:
    """Generated token ids (the end token included when finished), summed log p, and whether it ended."""

    tokens: tuple[int, ...]
    log_prob: float
    finished: bool

    def ranking(self, length_penalty: float) -> float:
        """log p / length^length_penalty (the beam-search ranking)."""
        return self.log_prob / max(len(self.tokens), 1) ** length_penalty


def _repeat_bans(history: Sequence[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already in `history` (no_repeat_ngram)."""
    if n <= 0 or len(history) < n - 1:
        return []
    if n == 1:
        return list(set(history))
    tail = tuple(history[len(history) - n + 1 :])
    return [history[i + n - 1] for i in range(len(history) - n + 1) if tuple(history[i : i + n - 1]) == tail]


def _log_probs(logits: Tensor, histories: Sequence[Sequence[int]], banned: Tensor, end_id: int, step: int,
               config: DecodeConfig) -> Tensor:
    """log-softmax [R, V] (float32) with the step's bans at -inf."""
    scores = logits.float()
    scores[:, banned] = _NEG
    if step < config.min_length:
        scores[:, end_id] = _NEG
    if config.no_repeat_ngram:
        for row, history in enumerate(histories):
            bans = _repeat_bans(history, config.no_repeat_ngram)
            if bans:
                scores[row, bans] = _NEG
    return torch.log_softmax(scores, dim=-1)


def search(
    stepper: Stepper, segments: int, config: DecodeConfig, end_id: int, banned: Sequence[int],
    generator: torch.Generator | None = None,
) -> list[list[Hypothesis]]:
    """Decode `segments` segments with `stepper`: per segment its best hypothesis (greedy, beam) or
    `config.samples` sampled ones, in segment order."""
    if config.method == "beam":
        return _beam(stepper, segments, config, end_id, banned)
    rows = 1 if config.method == "greedy" else config.samples
    return _independent(stepper, segments, rows, config, end_id, banned, generator)


def _independent(
    stepper: Stepper, segments: int, group: int, config: DecodeConfig, end_id: int, banned: Sequence[int],
    generator: torch.Generator | None,
) -> list[list[Hypothesis]]:
    """Greedy (group 1) or sampling: every row continues on its own."""
    logits = stepper.first()
    device = logits.device
    ban = torch.tensor(list(banned), dtype=torch.long, device=device)
    live = list(range(segments))  # original index of each live segment
    history: list[list[int]] = [[] for _ in range(segments * group)]
    total = [0.0] * (segments * group)
    ended = [False] * (segments * group)
    owner = [s * group + g for s in range(segments) for g in range(group)]  # live row → its output slot
    # Every row of a segment starts from the segment's one prompt row: stepper row of each live row.
    source = torch.arange(segments, device=device).repeat_interleave(group)
    logits = logits.index_select(0, source)
    for step in range(config.max_length):
        logp = _log_probs(logits, [history[o] for o in owner], ban, end_id, step, config)
        if config.method == "greedy":
            chosen = logp.argmax(-1)
        else:
            probs = torch.softmax(logp / config.temperature, dim=-1)
            chosen = torch.multinomial(probs, 1, generator=generator)[:, 0]
        picked = logp.gather(1, chosen[:, None])[:, 0]
        chosen_list, picked_list = chosen.tolist(), picked.tolist()
        for row, slot in enumerate(owner):
            if not ended[slot]:
                history[slot].append(chosen_list[row])
                total[slot] += picked_list[row]
                ended[slot] = chosen_list[row] == end_id
        if step == config.max_length - 1:
            break
        keep = [i for i, s in enumerate(live) if not all(ended[s * group + g] for g in range(group))]
        if not keep:
            break
        rows = [i * group + g for i in keep for g in range(group)]
        index = torch.tensor(rows, dtype=torch.long, device=device)
        live = [live[i] for i in keep]
        owner = [owner[r] for r in rows]
        logits = stepper.advance(chosen.index_select(0, index), source.index_select(0, index),
                                 torch.tensor(keep, dtype=torch.long, device=device))
        source = torch.arange(len(rows), device=device)  # from now on stepper rows are the live rows
    hyps = [Hypothesis(tuple(history[i]), total[i], ended[i]) for i in range(segments * group)]
    return [hyps[s * group : (s + 1) * group] for s in range(segments)]


def _beam(stepper: Stepper, segments: int, config: DecodeConfig, end_id: int, banned: Sequence[int]) -> list[list[Hypothesis]]:
    """Beam search (see the module docstring)."""
    k, alpha = config.beams, config.length_penalty
    logits = stepper.first()
    device = logits.device
    ban = torch.tensor(list(banned), dtype=torch.long, device=device)
    live = list(range(segments))
    group = 1  # rows per live segment: 1 (the prompt) before the first step, k after
    history: list[list[int]] = [[] for _ in range(segments)]
    scores = torch.zeros(segments, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(segments)]
    unfinished: list[list[Hypothesis]] = [[] for _ in range(segments)]
    for step in range(config.max_length):
        vocab = logits.shape[-1]
        logp = _log_probs(logits, history, ban, end_id, step, config)
        candidates = (scores[:, None] + logp).view(len(live), group * vocab)
        width = min(2 * k, group * vocab)
        top_scores, top_index = candidates.topk(width, dim=-1)
        top_scores_list, top_index_list = top_scores.tolist(), top_index.tolist()
        parents, tokens, new_scores, new_history, keep = [], [], [], [], []
        for i, original in enumerate(live):
            chosen: list[tuple[int, int, float]] = []
            for rank in range(width):
                value, flat = top_scores_list[i][rank], top_index_list[i][rank]
                if value == _NEG:
                    break
                row, token = i * group + flat // vocab, flat % vocab
                if token == end_id:  # every ending among the 2·G best is kept: more finished candidates only
                    finished[original].append(Hypothesis((*history[row], token), value, True))
                    continue
                chosen.append((row, token, value))
                if len(chosen) == k:
                    break
            last = step == config.max_length - 1
            if last:
                unfinished[original] = [Hypothesis((*history[r], t), v, False) for r, t, v in chosen]
            if last or not chosen or _done(finished[original], chosen[0][2], step + 1, config.max_length, k, alpha):
                continue
            while len(chosen) < k:  # a tiny vocabulary: pad with hopeless copies
                chosen.append((chosen[0][0], chosen[0][1], _NEG))
            keep.append(i)
            for row, token, value in chosen:
                parents.append(row)
                tokens.append(token)
                new_scores.append(value)
                new_history.append([*history[row], token])
        if not keep:
            break
        live = [live[i] for i in keep]
        history = new_history
        scores = torch.tensor(new_scores, device=device)
        group = k
        logits = stepper.advance(torch.tensor(tokens, dtype=torch.long, device=device),
                                 torch.tensor(parents, dtype=torch.long, device=device),
                                 torch.tensor(keep, dtype=torch.long, device=device))
    return [[_best(finished[s] or unfinished[s], alpha)] for s in range(segments)]


def _done(finished: list[Hypothesis], best_live: float, length: int, max_length: int, beams: int,
          alpha: float) -> bool:
    """A segment is done when it holds `beams` finished hypotheses and its best live beam cannot beat them.

    A continuation's summed log p only falls, but with alpha > 0 its divisor grows: the best it can reach is
    best_live / max_length^alpha (the bound at the current length would stop too early)."""
    if len(finished) < beams:
        return False
    ranked = sorted((h.ranking(alpha) for h in finished), reverse=True)
    return best_live / (max_length if alpha > 0 else length) ** alpha <= ranked[beams - 1]


def _best(hypotheses: list[Hypothesis], alpha: float) -> Hypothesis:
    if not hypotheses:
        return Hypothesis((), _NEG, False)
    return max(hypotheses, key=lambda h: h.ranking(alpha))
