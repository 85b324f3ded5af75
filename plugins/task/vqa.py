"""Visual question answering (VQA v2): X²-VLM's answer decoder ranking a candidate list, or a classifier.

Both heads start from the question fused with the image: fused = fuse(encode_text(question), image) [B, Lq, D].

decoder (the paper's head): a Transformer decoder with as many layers as the model's fusion, initialised
as a copy of it (self-attention + cross-attention + FFN per layer). Its memory is the fused question
(VisualMemory: cls = fused[:, 0], patches = fused[:, 1:] under the question's mask; a Linear adapter maps
D to the vision width when they differ). It reads an answer [A, La] embedded by the model's text encoder
run left to right, runs its layers causally, and the model's MLM head predicts each next token.
Training: teacher forcing on each question's distinct answers, each weighted by its share of the human
answers (the reference recipe), summed over tokens. Inference ranks the candidate list, so every
prediction is a valid answer: the `rank_k` candidates whose first token is most probable, then the
whole-sequence log-probability (end token included) of those k picks the answer.

classifier (the fast baseline): an MLP on the fused [CLS] over the candidates, trained with the human
answers' shares as a soft target distribution.

decode: generate (free-form answers, no head of its own): the model itself, run as a left-to-right masked LM
over "[CLS] <prompt with the question> <answer> [SEP]" against the image (x2vlm_core.generation, as in
captioning), trained on each question's answers weighted by their shares, and decoded by `generation`
(greedy by default). Answers may fall outside the candidate list (`generated_outside_list` reports the share);
the list then only serves that count and `outside_list`.

Metric: VQA soft accuracy (x2vlm_core.evaluation.answers, through the plugin API) overall (`vqa_acc`) and
per question type. Candidates: see plugins/task/_answers.py. Shapes: B questions, A answers, C candidates,
k ranked candidates, L tokens, D fusion width, V vocabulary.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from plugins.task._answers import (
    AnswerClassifier,
    AnswerListConfig,
    QABatch,
    build_answer_list,
    export_answer_list,
    qa_batches,
    qa_records,
    qa_visuals,
)
from x2vlm_core.plugin_api import (
    DecodeConfig,
    LossOutput,
    PluginSpec,
    Prediction,
    Preprocess,
    QASample,
    Record,
    TaskModule,
    TokenizedText,
    VisualMemory,
    VLModel,
    generate,
    hookimpl,
    normalize_answer,
    sequence_log_prob,
    vqa_scores,
)

__all__ = ["AnswerDecoder", "VqaConfig", "VqaTask"]

_log = logging.getLogger("x2vlm.task.vqa")

# Most vocabulary logits [rows × positions × V] held at once while ranking (float32: 128 MiB).
_LOGIT_BUDGET = 1 << 25


class VqaConfig(AnswerListConfig):
    """The VQA recipe: head, ranking depth and answer length (candidates: see AnswerListConfig)."""

    head: Literal["decoder", "classifier"] = Field(
        "decoder", description="decoder: the paper's answer decoder ranking the candidates; classifier: an MLP on "
        "the fused [CLS] over the candidates (faster)",
    )
    rank_k: int = Field(128, gt=0, description="decoder: candidates kept by first-token probability, then scored "
                        "as whole sequences (reference: 128)")
    max_answer_len: int = Field(10, ge=3, description="most tokens per answer text, [CLS] and [SEP] included")
    decode: Literal["rank", "generate"] = Field(
        "rank", description="rank: the head picks a candidate (every answer is in the list); generate: the model "
        "writes a free-form answer after `prompt` (no head; the pretrained MLM head as output layer)",
    )
    prompt: str = Field("{question} ", description="decode generate: the text each answer continues; {question} "
                        "stands for the question (end it with a space: the answer starts a new word)")
    generation: DecodeConfig = Field(
        DecodeConfig(method="greedy", max_length=8), description="decode generate: greedy / beam search and "
        "lengths (max_length counts answer tokens, the end token included)",
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_names_the_question(cls, value: str) -> str:
        try:
            filled = value.format(question="")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(f"prompt {value!r} may only hold the placeholder {{question}} ({error})") from None
        if "{question}" not in value or filled == value:
            raise ValueError(f"prompt {value!r} must contain {{question}}: the answer depends on the question")
        return value

    @model_validator(mode="after")
    def _generate_needs_no_classifier(self) -> VqaConfig:
        if self.decode == "generate" and self.head == "classifier":
            raise ValueError("decode: generate writes answers with the model's own MLM head; head: classifier can "
                             "only pick candidates (drop one of them)")
        return self


class AnswerDecoder(nn.Module):
    """The answer decoder: a copy of the fusion run causally over answers [A, La, D], attending to the fused
    questions; `adapter` maps fused tokens D → the fusion's cross-attention input width (identity when equal)."""

    def __init__(self, fusion: nn.Module, width: int, memory_width: int) -> None:
        super().__init__()
        self.layers = copy.deepcopy(fusion)
        self.adapter: nn.Module = nn.Identity() if width == memory_width else nn.Linear(width, memory_width)

    def memory(self, fused: Tensor, question_mask: Tensor) -> VisualMemory:
        """Fused questions [B, Lq, D] as B segments (token 0 their [CLS], the rest under the question's mask)."""
        tokens = self.adapter(fused)
        rows = torch.arange(fused.shape[0], device=fused.device)
        return VisualMemory(patches=tokens[:, 1:], cls=tokens[:, 0], image=rows, mask=question_mask[:, 1:])

    def forward(self, answers: Tensor, mask: Tensor, memory: VisualMemory, owner: Tensor) -> Tensor:
        """Answer tokens [A, La, D] (text encoder, causal), mask [A, La], owner [A] → decoded [A, La, D]."""
        out: Tensor = self.layers(answers, mask, memory, owner, causal=True).tokens
        return out


@dataclass(frozen=True)
class _Candidates:
    """The candidate answers tokenized (ids / mask [C, La]) and run through the causal text encoder [C, La, D]."""

    ids: Tensor
    mask: Tensor
    tokens: Tensor


def _fusion_of(model: VLModel, who: str) -> nn.Module:
    fusion = getattr(model, "fusion", None)
    if not isinstance(fusion, nn.Module):
        raise TypeError(f"task {who} (head decoder): the answer decoder starts as a copy of the model's fusion "
                        "module (model.fusion), which this model lacks; use head: classifier")
    return fusion


class VqaTask(TaskModule):
    """VQA: a candidate list ranked by the answer decoder (or a classifier), or free-form answers; soft accuracy."""

    name = "vqa"
    record_types = (QASample,)
    metric = "vqa_acc"
    video = False  # clips instead of images (video_qa)

    def __init__(self, config: VqaConfig, model: VLModel) -> None:
        super().__init__()
        self.config = config
        self.answers = build_answer_list(config, self.name)
        sizes = model.heads.sizes
        self.decoder: AnswerDecoder | None = None
        self.classifier: AnswerClassifier | None = None
        if config.decode == "generate":
            pass  # no head: the model's text encoder and fusion, run causally, write the answer
        elif config.head == "decoder":
            self.decoder = AnswerDecoder(_fusion_of(model, self.name), sizes.fusion_width, sizes.vision_width)
            _warn_on_tied_candidates(self.answers.texts, model, config.max_answer_len)
        else:
            self.classifier = AnswerClassifier(sizes.fusion_width, len(self.answers))

    def export_config(self, config: dict[str, Any], asset_dir: Path) -> dict[str, Any]:
        """The candidate list goes into the checkpoint; answers_from is not needed again."""
        return export_answer_list(self.answers, config, asset_dir)

    # ------------------------------------------------------------------ training
    def batches(self, records: Iterator[Record], prep: Preprocess, batch_size: int,
                generator: torch.Generator) -> Iterator[QABatch]:
        return qa_batches(records, prep, batch_size, self.answers, self.name, self.video, self.frames,
                          decoder=self.classifier is None, max_answer_len=self.config.max_answer_len,
                          prompt=self.config.prompt if self.generates else None)

    @property
    def generates(self) -> bool:
        return self.config.decode == "generate"

    def loss(self, model: VLModel, batch: QABatch) -> LossOutput:  # type: ignore[override]
        drawn = batch.size + (0 if self.classifier is None else batch.outside)
        logs = {"outside_list": batch.outside.float() / drawn}
        if self.classifier is not None:
            logits = self.classifier(self._fuse(model, batch.visuals, batch.question, cls_only=True)[:, 0])
            loss = -(batch.target * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
            hit = batch.target.gather(1, logits.argmax(-1, keepdim=True)).gt(0).float().mean()
            return LossOutput(loss=loss, logs={**logs, "train_hit": hit.detach()})
        if self.generates:  # summed log p of each answer after its prompt, against its question's visual
            memory = VisualMemory.whole(self._visual_tokens(model, batch.visuals))
            logp = sequence_log_prob(model, memory, batch.owner, batch.answer.ids, batch.answer.mask,
                                     batch.prompt_lengths)
            return LossOutput(loss=-(batch.weight * logp).sum() / batch.size, logs=logs)
        fused = self._fuse(model, batch.visuals, batch.question)
        per_answer = self._answer_nll(model, fused, batch.question.mask, batch.answer, batch.owner)
        loss = (batch.weight * per_answer).sum() / batch.size
        return LossOutput(loss=loss, logs=logs)

    def _fuse(self, model: VLModel, visuals: Tensor, question: TokenizedText, cls_only: bool = False) -> Tensor:
        """Questions fused with their visuals: [B, Lq, D] (or the [CLS] alone, [B, 1, D])."""
        tokens = self._visual_tokens(model, visuals)
        text = model.encode_text(question.ids, question.mask)
        rows = torch.arange(visuals.shape[0], device=visuals.device)
        positions = torch.zeros(rows.shape[0], 1, dtype=torch.long, device=rows.device) if cls_only else None
        return model.fuse(text.tokens, question.mask, VisualMemory.whole(tokens), rows, positions=positions)

    @staticmethod
    def _visual_tokens(model: VLModel, visuals: Tensor) -> Tensor:
        """Images [B, 3, H, W] or clips [B, F, 3, H, W] → visual tokens [B, 1+N, Dv]."""
        return model.encode_videos(visuals) if visuals.dim() == 5 else model.encode_images(visuals)

    def _answer_nll(self, model: VLModel, fused: Tensor, question_mask: Tensor, answer: TokenizedText,
                    owner: Tensor) -> Tensor:
        """Teacher-forced negative log-likelihood [A] of each answer (its tokens after [CLS], end token included)."""
        assert self.decoder is not None
        text = model.encode_text(answer.ids, answer.mask, causal=True)
        decoded = self.decoder(text.tokens, answer.mask, self.decoder.memory(fused, question_mask), owner)
        valid = answer.mask[:, 1:]  # position t predicts token t + 1
        logits = model.heads.mlm(decoded[:, :-1][valid])  # only real targets: [T, V]
        nll = F.cross_entropy(logits.float(), answer.ids[:, 1:][valid], reduction="none")
        return torch.zeros(valid.shape, dtype=nll.dtype, device=nll.device).masked_scatter(valid, nll).sum(1)

    # ------------------------------------------------------------------ prediction
    def _candidates(self, model: VLModel) -> _Candidates:
        """Every candidate tokenized and encoded once (the causal text encoding does not depend on the question)."""
        tokenized = model.tokenizer([_decoded_form(a) for a in self.answers.texts], self.config.max_answer_len)
        tokenized = tokenized.to(model.device)
        tokens = model.encode_text(tokenized.ids, tokenized.mask, causal=True).tokens
        return _Candidates(tokenized.ids, tokenized.mask, tokens)

    def _predict(self, model: VLModel, visuals: Tensor, questions: Sequence[str],
                 candidates: _Candidates | None) -> list[Prediction]:
        """One answer per (visual, question): a candidate with its probability (classifier, decoder ranking) or,
        in generate mode, the written text with its mean log-probability per token."""
        if self.generates:
            memory = VisualMemory.whole(self._visual_tokens(model, visuals))
            rows = torch.arange(visuals.shape[0], device=visuals.device)
            prompts = [self.config.prompt.format(question=q) for q in questions]
            return [Prediction(g.text, g.score) for g in generate(model, memory, rows, prompts, self.config.generation)]
        prep = model.preprocess(self.frames)
        question = prep.tokenizer(list(questions), prep.max_text_len).to(visuals.device)
        if self.classifier is not None:
            probs = self.classifier(self._fuse(model, visuals, question, cls_only=True)[:, 0]).float().softmax(-1)
            score, best = probs.max(-1)
        else:
            assert candidates is not None
            best, score = self.rank(model, self._fuse(model, visuals, question), question.mask, candidates)
        return [Prediction(self.answers.texts[j], float(p)) for j, p in zip(best.tolist(), score.tolist(), strict=True)]

    def rank(self, model: VLModel, fused: Tensor, question_mask: Tensor, candidates: _Candidates) -> tuple[Tensor, Tensor]:
        """Decoder ranking: top-k candidates by first-token log-probability [B, k], then the best whole-sequence
        log-probability among them → (candidate index [B], probability [B])."""
        assert self.decoder is not None
        b, width = fused.shape[0], fused.shape[-1]
        memory = self.decoder.memory(fused, question_mask)
        rows = torch.arange(b, device=fused.device)
        start = candidates.tokens[:1, :1].expand(b, 1, width)  # causal: the start token's encoding is shared
        first = self.decoder(start, candidates.mask[:1, :1].expand(b, 1), memory, rows)
        first_logp = F.log_softmax(model.heads.mlm(first[:, 0]).float(), dim=-1)  # [B, V]
        k = min(self.config.rank_k, candidates.ids.shape[0])
        top = first_logp[:, candidates.ids[:, 1]].topk(k, dim=1).indices  # [B, k] candidate indices
        whole = self._sequence_logp(model, candidates, top.flatten(), rows.repeat_interleave(k), memory).view(b, k)
        best = whole.argmax(1, keepdim=True)
        return top.gather(1, best)[:, 0], whole.gather(1, best)[:, 0].exp()

    def _sequence_logp(self, model: VLModel, candidates: _Candidates, rows: Tensor, owner: Tensor,
                       memory: VisualMemory) -> Tensor:
        """Log-probability [R] of candidates `rows` [R] as answers to questions `owner` [R], in chunks that keep
        the vocabulary logits within _LOGIT_BUDGET."""
        assert self.decoder is not None
        length, vocab = candidates.ids.shape[1], model.tokenizer.vocab_size
        chunk = max(1, _LOGIT_BUDGET // (length * vocab))
        out = []
        for s in range(0, rows.shape[0], chunk):
            r, o = rows[s : s + chunk], owner[s : s + chunk]
            ids, mask = candidates.ids[r], candidates.mask[r]
            decoded = self.decoder(candidates.tokens[r], mask, memory, o)
            logp = F.log_softmax(model.heads.mlm(decoded[:, :-1]).float(), dim=-1)
            token = logp.gather(2, ids[:, 1:, None])[..., 0]
            out.append(token.masked_fill(~mask[:, 1:], 0.0).sum(1))
        return torch.cat(out)

    def predict_texts(self, model: VLModel, records: Sequence[QASample], batch_size: int) -> list[Prediction]:
        """One Prediction per record (its visual and question), in batches of `batch_size`."""
        prep = model.preprocess(self.frames)
        candidates = self._candidates(model) if self.decoder is not None else None
        out: list[Prediction] = []
        for i in range(0, len(records), batch_size):
            chunk = records[i : i + batch_size]
            visuals = qa_visuals(chunk, prep, self.frames).to(model.device)
            out += self._predict(model, visuals, [r.question for r in chunk], candidates)
        return out

    def free_form_stats(self, predictions: Sequence[Prediction]) -> dict[str, float]:
        """Generate mode: the share of written answers that are no candidate (`generated_outside_list`)."""
        if not self.generates:
            return {}
        return {"generated_outside_list": sum(self.answers.find(p.text) is None for p in predictions) / len(predictions)}

    # ------------------------------------------------------------------ evaluation and inference
    @torch.no_grad()
    def evaluate(self, model: VLModel, records: Sequence[Record], batch_size: int) -> dict[str, float]:
        qa = qa_records(records, self.name, self.video)
        few = next((r for r in qa if len(r.answers) < 2), None)
        if few is not None:
            raise ValueError(f"task {self.name}: record {few.key!r} has {len(few.answers)} human answer(s); VQA soft "
                             "accuracy needs at least 2 (VQA v2 has 10); score single-answer data with video_qa's "
                             "exact-match accuracy or give every human answer")
        predictions = self.predict_texts(model, qa, batch_size)
        scores = vqa_scores((p.text, r.answers, r.question_type) for p, r in zip(predictions, qa, strict=True))
        outside = sum(not self.answers.shares(r.answers) for r in qa)
        return {**scores.as_dict(), "n": float(len(qa)), "outside_list": outside / len(qa),
                "candidates": float(len(self.answers)), **self.free_form_stats(predictions)}

    @torch.no_grad()
    def answer(self, model: VLModel, visuals: Tensor, questions: Sequence[str], video: bool = False) -> list[Prediction]:
        """One answer per (visual, question): visuals normalised [B, 3, H, W] (or [B, F, 3, H, W], video)."""
        if (visuals.dim() == 5) != video or visuals.shape[0] != len(questions):
            raise ValueError(f"task {self.name}: answer() got visuals {tuple(visuals.shape)} (video={video}) for "
                             f"{len(questions)} questions; give one image [3, H, W] (clip [F, 3, H, W]) per question")
        candidates = self._candidates(model) if self.decoder is not None else None
        return self._predict(model, visuals.to(model.device), questions, candidates)


def _warn_on_tied_candidates(texts: Sequence[str], model: VLModel, max_len: int) -> None:
    """Warn when candidates tokenize identically (e.g. digits a tokenizer maps to [UNK]): the decoder cannot
    tell them apart, so ties are broken by list order."""
    tokenized = model.tokenizer([_decoded_form(t) for t in texts], max_len)
    groups: dict[tuple[int, ...], list[str]] = {}
    for text, ids, mask in zip(texts, tokenized.ids.tolist(), tokenized.mask.tolist(), strict=True):
        groups.setdefault(tuple(i for i, m in zip(ids, mask, strict=True) if m), []).append(text)
    tied = [g for g in groups.values() if len(g) > 1]
    if tied:
        examples = "; ".join(" = ".join(repr(t) for t in g[:4]) for g in tied[:3])
        _log.warning("task vqa (head decoder): %d candidates share their token ids with another (%s); the decoder "
                     "scores them alike, so list order decides between them. Their words are probably unknown to "
                     "the tokenizer ([UNK]); use head: classifier or a tokenizer that covers them",
                     sum(len(g) for g in tied), examples)


def _decoded_form(answer: str) -> str:
    """The text the decoder writes for a candidate: its normalised form, as in training."""
    return normalize_answer(answer) or answer


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="task", name="vqa", config=VqaConfig, factory=VqaTask)]
