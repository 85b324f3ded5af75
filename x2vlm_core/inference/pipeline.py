"""The inference pipeline: a checkpoint rebuilt with its own preprocessing, and what it predicts.

`load(checkpoint)` → Pipeline. The checkpoint says how inputs look (Preprocess: tokenizer, image side,
pixel mean/std, most text tokens, frames per clip); user inputs (paths, bytes, PIL images, arrays, video
files: inference/inputs.py) are decoded, resized to image_size × image_size (as in training; normalised
boxes survive the square resize) and normalised here. Everything is batched (`batch_size` items per
forward pass) and runs on any device and dtype; results come back on the CPU.

Shapes: I images, T texts, Q queries, E embedding width, F frames, S image side.
    embed_images / embed_videos / embed_texts → float32 [N, E], L2-normalised
    score(images, texts) → Scores [I, T] (cosine; with rerank, p(match) of every pair from the matching head)
    retrieve(queries, corpus, k) → one Retrieval per query (contrastive top-k, optional matching re-rank)
    ground(image, text) → Grounding (box head on the fused [CLS]; score = p(match))
    classify(images, labels) → Classification per image (zero-shot: softmax of sim / τ over label prompts)
    answer / verify / caption → Prediction, delegated to the checkpoint's fine-tuned task
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from torch import Tensor

from x2vlm_core.checkpoint import Manifest
from x2vlm_core.contracts import AnswersQuestions, Captions, Preprocess, VerifiesStatements, VisualMemory
from x2vlm_core.contracts.tasks import Prediction
from x2vlm_core.data.collate import frame_indices
from x2vlm_core.data.transforms import normalise, resize
from x2vlm_core.evaluation.retrieval import _rerank, encode_texts, match_log_probs
from x2vlm_core.inference.inputs import (
    ImageInput,
    InputError,
    InputLimits,
    VideoInput,
    check_texts,
    to_image,
    to_video,
)
from x2vlm_core.inference.progress import Counter
from x2vlm_core.inference.results import Box, Classification, Grounding, Hit, Retrieval, Scores
from x2vlm_core.model import X2VLM

__all__ = ["PROGRESS_FROM", "MissingTaskError", "Pipeline", "load", "resolve_dtype"]

_NO_LIMITS = InputLimits()  # the defaults (frozen: one instance serves every pipeline)
_DIRECTIONS = ("text-to-image", "image-to-text", "text-to-video", "video-to-text")
PROGRESS_FROM = 512  # inputs from which embed_* shows a progress bar unless told otherwise
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16, "16": torch.float16}
# What each task method needs: (protocol, what it does, the task plugin to fine-tune for it)
_TASKS: dict[str, tuple[type, str, str]] = {
    "answer": (AnswersQuestions, "answer questions", "vqa"),
    "verify": (VerifiesStatements, "verify statements about image pairs", "nlvr2"),
    "caption": (Captions, "write captions", "captioning"),
}


class MissingTaskError(ValueError):
    """The checkpoint's task cannot do what was asked (answer, verify, caption): it names the task to fine-tune."""

    status = 404


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """"bf16", "float16", torch.float32, ... → a floating torch dtype (None → float32)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point type, got {dtype}")
        return dtype
    found = _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if found is None:
        raise ValueError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16")
    return found


def load(
    checkpoint: str | Path,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    *,
    batch_size: int = 32,
    limits: InputLimits = _NO_LIMITS,
    registry: Any = None,
) -> Pipeline:
    """Rebuild a checkpoint (pretrained, fine-tuned, re-assembled or converted; a run directory means its
    newest complete checkpoint) as a Pipeline on `device` (default: cuda when available, else cpu) in
    `dtype` (default float32). Raises CheckpointError naming what is wrong with the checkpoint."""
    from x2vlm_core.checkpoint.rebuild import load_model
    from x2vlm_core.discovery import default_registry

    loaded = load_model(checkpoint, registry if registry is not None else default_registry())
    return Pipeline(loaded.model, loaded.path, loaded.manifest, device=device, dtype=dtype,
                    batch_size=batch_size, limits=limits)


def _frames_of(model: X2VLM, manifest: Manifest) -> int:
    """Frames per clip the checkpoint was trained with: its task's, else its pretraining data's."""
    if model.task is not None:
        frames = int(model.task.frames)
    else:
        frames = int((manifest.config.get("data") or {}).get("frames", 3))
    return min(frames, model.video.max_frames) if model.video is not None else frames


class Pipeline:
    """A checkpoint ready to predict (see the module docstring). Build it with `x2vlm_core.load(...)`.

    Attributes: model (X2VLM, eval mode), path (the checkpoint directory), manifest, device, dtype,
    preprocess (Preprocess), batch_size, limits (InputLimits for every input).
    """

    def __init__(
        self,
        model: X2VLM,
        path: Path,
        manifest: Manifest,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 32,
        limits: InputLimits = _NO_LIMITS,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = resolve_dtype(dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.path, self.manifest = Path(path), manifest
        self.batch_size, self.limits = batch_size, limits
        self.preprocess: Preprocess = model.preprocess(frames=_frames_of(model, manifest))

    # ------------------------------------------------------------------ what this checkpoint can do
    @property
    def task(self) -> str | None:
        """The fine-tuned task's plugin name, or None for a pretrained checkpoint."""
        return self.model.task.name if self.model.task is not None else None

    def capabilities(self) -> dict[str, bool]:
        """Which methods work: the contrastive/grounding ones always; video with a video plugin; the task ones
        when the checkpoint's task implements them."""
        task = self.model.task
        out = {name: True for name in ("embed", "score", "retrieve", "ground", "classify")}
        out["video"] = self.model.video is not None
        for name, (protocol, _, _) in _TASKS.items():
            out[name] = task is not None and isinstance(task, protocol)
        return out

    def describe(self) -> dict[str, Any]:
        """The checkpoint and its preprocessing as JSON (the server's /info)."""
        return {"checkpoint": str(self.path), "step": self.manifest.step, "task": self.task,
                "image_size": self.preprocess.image_size, "frames": self.preprocess.frames,
                "max_text_len": self.preprocess.max_text_len, "embed_dim": self.model.heads.sizes.embed_dim,
                "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "capabilities": self.capabilities()}

    # ------------------------------------------------------------------ preprocessing
    def prepare_images(self, images: Sequence[ImageInput], start: int = 0, field: str = "images") -> Tensor:
        """Images → uint8 [B, 3, S, S] (decoded, RGB, resized); `start` numbers them in error messages."""
        size = self.preprocess.image_size
        return torch.stack([resize(to_image(x, f"{field}[{start + i}]", self.limits), size)
                            for i, x in enumerate(images)])

    def prepare_videos(self, videos: Sequence[VideoInput], start: int = 0, field: str = "videos") -> Tensor:
        """Clips → uint8 [B, F, 3, S, S], F = preprocess.frames (sampled at segment middles)."""
        self.model.check_frames(self.preprocess.frames, "embed_videos")
        size, frames = self.preprocess.image_size, self.preprocess.frames
        out = []
        for i, clip in enumerate(videos):
            pixels = to_video(clip, f"{field}[{start + i}]", frames, self.limits)
            out.append(resize(pixels[frame_indices(pixels.shape[0], frames)], size))
        return torch.stack(out)

    def _normalised(self, pixels: Tensor) -> Tensor:
        prep = self.preprocess
        return normalise(pixels, prep.mean, prep.std).to(self.device, self.dtype)

    @torch.no_grad()
    def visual_tokens(self, pixels: Tensor, video: bool = False) -> Tensor:
        """uint8 [B, 3, S, S] (or clips [B, F, 3, S, S]) → visual tokens [B, 1+N, Dv] on the device, batched."""
        chunks = []
        for i in range(0, pixels.shape[0], self.batch_size):
            x = self._normalised(pixels[i : i + self.batch_size])
            chunks.append(self.model.encode_videos(x) if video else self.model.encode_images(x))
        return torch.cat(chunks)

    def _chunks(self, n: int, label: str, progress: bool | None, batch_size: int | None) -> Iterator[slice]:
        step = batch_size or self.batch_size
        if step < 1:
            raise ValueError(f"batch_size must be at least 1, got {step}")
        with Counter(n, label, enabled=progress if progress is not None else n >= PROGRESS_FROM) as counter:
            for i in range(0, n, step):
                yield slice(i, min(n, i + step))
                counter.advance(min(n, i + step) - i)

    # ------------------------------------------------------------------ embeddings
    @torch.no_grad()
    def embed_images(self, images: ImageInput | Sequence[ImageInput], batch_size: int | None = None,
                     progress: bool | None = None) -> Tensor:
        """Images → L2-normalised float32 [I, E] on the CPU (decoded a batch at a time)."""
        items = _image_list(images)
        out = [self.image_features(self.prepare_images(items[s], s.start))
               for s in self._chunks(len(items), "images", progress, batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.model.heads.sizes.embed_dim)

    @torch.no_grad()
    def embed_videos(self, videos: VideoInput | Sequence[VideoInput], batch_size: int | None = None,
                     progress: bool | None = None) -> Tensor:
        """Clips (video files, frame arrays, lists of frames) → L2-normalised float32 [V, E] on the CPU."""
        items = _video_list(videos)
        out = [self.image_features(self.prepare_videos(items[s], s.start), video=True)
               for s in self._chunks(len(items), "videos", progress, batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.model.heads.sizes.embed_dim)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int | None = None,
                    progress: bool | None = None) -> Tensor:
        """Texts → L2-normalised float32 [T, E] on the CPU (longer texts are cut at max_text_len tokens)."""
        items = check_texts(texts)
        out = []
        for s in self._chunks(len(items), "texts", progress, batch_size):
            tok = self.model.tokenizer(items[s], self.preprocess.max_text_len)
            encoded = self.model.encode_text(tok.ids.to(self.device), tok.mask.to(self.device))
            out.append(encoded.features.float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def image_features(self, pixels: Tensor, video: bool = False) -> Tensor:
        """Prepared uint8 images [B, 3, S, S] (or clips) → float32 [B, E] on the CPU."""
        return self.model.heads.image_features(self.visual_tokens(pixels, video)).float().cpu()

    # ------------------------------------------------------------------ contrastive use
    @property
    def temperature(self) -> float:
        return float(self.model.heads.temperature.detach())

    @torch.no_grad()
    def score(self, images: ImageInput | Sequence[ImageInput], texts: Sequence[str], rerank: bool = False,
              video: bool = False) -> Scores:
        """Every image (or clip) against every text: cosine similarity [I, T]; with `rerank`, also the
        matching head's p(match) of all I × T pairs (one fusion pass per pair)."""
        texts = check_texts(texts)
        items = _video_list(images) if video else _image_list(images)
        pixels = self.prepare_videos(items) if video else self.prepare_images(items)
        tokens = self.visual_tokens(pixels, video)
        text, mask, text_feat = encode_texts(self.model, texts, self.batch_size)
        sim = (self.model.heads.image_features(tokens).float() @ text_feat.float().T).cpu()
        if not rerank:
            return Scores(sim, self.temperature)
        rows = torch.arange(len(texts)).repeat(len(items))
        cols = torch.arange(len(items)).repeat_interleave(len(texts))
        pairs = torch.stack([rows, cols], -1).to(self.device)
        log_match = match_log_probs(self.model, text, mask, VisualMemory.whole(tokens), pairs, self.batch_size)
        return Scores(sim, self.temperature, log_match.exp().view(len(items), len(texts)).cpu())

    @torch.no_grad()
    def retrieve(self, queries: Sequence[Any], corpus: Sequence[Any], k: int = 10, rerank: int = 0,
                 direction: str = "text-to-image") -> list[Retrieval]:
        """Cross-modal retrieval, `direction` one of text-to-image (default), image-to-text, text-to-video,
        video-to-text (a string is always a text, so the direction is said, not guessed). Contrastive
        top-k; with `rerank` = R > 0 the matching head re-scores each query's contrastive top R
        (sim / τ + log p(match)), which then rank above the rest; the best k are returned."""
        if direction not in _DIRECTIONS:
            raise InputError("direction", f"unknown {direction!r}; use one of {', '.join(_DIRECTIONS)}")
        if k < 1:
            raise InputError("k", f"must be at least 1, got {k}")
        if rerank < 0:
            raise InputError("rerank", f"must be ≥ 0 (0 = no re-rank), got {rerank}")
        text_queries, video = direction.startswith("text"), "video" in direction
        queries, corpus = list(queries), list(corpus)
        if not queries or not corpus:
            raise InputError("queries" if not queries else "corpus", "empty; give at least one item")
        texts = check_texts(queries if text_queries else corpus, "queries" if text_queries else "corpus")
        visual_field = "corpus" if text_queries else "queries"
        visuals = corpus if text_queries else queries
        visual_feat = torch.cat([self.image_features(self._prepare(visuals[s], video, s.start, visual_field), video)
                                 for s in self._chunks(len(visuals), visual_field, None, None)])
        text_feat = self.embed_texts(texts)
        sim = text_feat @ visual_feat.T if text_queries else visual_feat @ text_feat.T  # [Q, N]
        top_sim, top_rows = sim.topk(min(max(k, rerank), sim.shape[1]), dim=1)
        match = None
        if rerank > 0:
            match = self._rerank_candidates(texts, visuals, top_rows[:, :rerank], text_queries, video, visual_field)
        return [self._hits(q if isinstance(q, str) else _item_id(q, i, "queries"), top_sim[i], top_rows[i],
                           None if match is None else match[i], corpus, k)
                for i, q in enumerate(queries)]

    def _rerank_candidates(self, texts: list[str], visuals: Sequence[Any], rows: Tensor, text_queries: bool,
                           video: bool, field: str) -> Tensor:
        """p(match) [Q, R] of each query with its candidates rows [Q, R] (corpus rows)."""
        q, r = rows.shape
        if text_queries:  # candidates are visuals: encode each distinct one once
            used, inverse = torch.unique(rows, return_inverse=True)
            tokens = self.visual_tokens(self._prepare([visuals[int(j)] for j in used], video, 0, field), video)
            text_rows, visual_rows = torch.arange(q)[:, None].expand(q, r), inverse
        else:  # candidates are texts; the queries are the visuals
            tokens = self.visual_tokens(self._prepare(visuals, video, 0, field), video)
            text_rows, visual_rows = rows, torch.arange(q)[:, None].expand(q, r)
        return self.match_scores(texts, text_rows.reshape(-1), tokens, visual_rows.reshape(-1)).view(q, r)

    @torch.no_grad()
    def match_scores(self, texts: Sequence[str], text_rows: Tensor, visual_tokens: Tensor,
                     visual_rows: Tensor) -> Tensor:
        """p(match) [P] from the matching head of pairs (texts[text_rows[p]], visual_tokens[visual_rows[p]])."""
        text, mask, _ = encode_texts(self.model, list(texts), self.batch_size)
        pairs = torch.stack([text_rows, visual_rows], -1).to(self.device)
        memory = VisualMemory.whole(visual_tokens)
        return match_log_probs(self.model, text, mask, memory, pairs, self.batch_size).exp().cpu()

    def ranked(self, sim: Tensor, match: Tensor | None) -> tuple[Tensor, Tensor]:
        """One query's candidates (similarities sim [D], best first; p(match) [R] of the first R) → (order [D]
        best first, score [D] = sim / τ (+ log p(match) for the re-ranked, which stay above the rest))."""
        score = sim.double() / self.temperature
        if match is None or match.numel() == 0:
            return torch.arange(sim.shape[0]), score
        r = match.shape[0]
        final = _rerank(sim[None], torch.arange(r)[None], match.double().clamp_min(1e-300).log()[None],
                        self.temperature)[0]
        score[:r] = score[:r] + match.double().clamp_min(1e-300).log()
        return final.argsort(descending=True), score

    def _prepare(self, items: Sequence[Any], video: bool, start: int, field: str) -> Tensor:
        return self.prepare_videos(items, start, field) if video else self.prepare_images(items, start, field)

    def _hits(self, query: str, sim: Tensor, rows: Tensor, match: Tensor | None, corpus: Sequence[Any],
              k: int) -> Retrieval:
        """The best k of one query's candidates (rows [D], similarities sim [D], p(match) [R] of the first R)."""
        order, score = self.ranked(sim, match)
        hits = []
        for j in order[:k].tolist():
            row = int(rows[j])
            p = float(match[j]) if match is not None and j < match.shape[0] else None
            hits.append(Hit(index=row, id=_item_id(corpus[row], row), score=float(score[j]),
                            similarity=float(sim[j]), match=p))
        return Retrieval(query, hits)

    # ------------------------------------------------------------------ grounding
    @overload
    def ground(self, image: ImageInput, text: str) -> Grounding: ...

    @overload
    def ground(self, image: ImageInput, text: Sequence[str]) -> list[Grounding]: ...

    @torch.no_grad()
    def ground(self, image: ImageInput, text: str | Sequence[str]) -> Grounding | list[Grounding]:
        """Where `text` (a phrase, or several) is in `image`: the box head on the fused [CLS] of (whole image,
        phrase), and p(match) as its score. A list of phrases gives a list, in order (the image is encoded once)."""
        phrases = check_texts([text] if isinstance(text, str) else list(text), "text")
        raw = to_image(image, "image", self.limits)
        tokens = self.visual_tokens(resize(raw, self.preprocess.image_size)[None])
        boxes, match = self.boxes(phrases, tokens, torch.zeros(len(phrases), dtype=torch.long))
        width, height = int(raw.shape[-1]), int(raw.shape[-2])
        out = [Grounding(t, Box(*(float(v) for v in b)), float(p), width, height)
               for t, b, p in zip(phrases, boxes.tolist(), match.tolist(), strict=False)]
        return out[0] if isinstance(text, str) else out

    @torch.no_grad()
    def ground_pairs(self, images: Sequence[ImageInput], texts: Sequence[str]) -> list[Grounding]:
        """(image i, phrase i) pairs → one Grounding each (batched; images may repeat)."""
        texts = check_texts(texts)
        if len(images) != len(texts):
            raise InputError("texts", f"{len(texts)} texts for {len(images)} images; give one text per image")
        raw = [to_image(x, f"images[{i}]", self.limits) for i, x in enumerate(images)]
        sizes = [(int(x.shape[-1]), int(x.shape[-2])) for x in raw]
        tokens = self.visual_tokens(torch.stack([resize(x, self.preprocess.image_size) for x in raw]))
        boxes, match = self.boxes(texts, tokens, torch.arange(len(texts)))
        return [Grounding(t, Box(*(float(v) for v in b)), float(p), w, h)
                for t, b, p, (w, h) in zip(texts, boxes.tolist(), match.tolist(), sizes, strict=False)]

    @torch.no_grad()
    def boxes(self, texts: Sequence[str], visual_tokens: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Each text's box [K, 4] (cx, cy, w, h) on visual row rows[i] and p(match) [K], both from one fusion
        pass (the box and matching heads read the same fused [CLS]); on the CPU."""
        text, mask, _ = encode_texts(self.model, texts, self.batch_size)
        memory = VisualMemory.whole(visual_tokens)
        boxes, match = [], []
        for i in range(0, len(texts), self.batch_size):
            seg = rows[i : i + self.batch_size].to(self.device)
            cls = self.model.fuse(text[i : i + self.batch_size], mask[i : i + self.batch_size], memory, seg,
                                  positions=torch.zeros_like(seg)[:, None])[:, 0]
            boxes.append(self.model.heads.bbox(cls).float().cpu())
            match.append(self.model.heads.itm(cls).float().softmax(-1)[:, 1].cpu())
        return torch.cat(boxes), torch.cat(match)

    # ------------------------------------------------------------------ zero-shot classification
    @torch.no_grad()
    def classify(self, images: ImageInput | Sequence[ImageInput], labels: Sequence[str],
                 template: str = "a photo of a {}") -> list[Classification]:
        """Zero-shot: each image against the prompts template.format(label); probabilities = softmax(sim / τ)."""
        labels = check_texts(labels, "labels")
        if len(set(labels)) != len(labels):
            raise InputError("labels", f"labels repeat: {sorted({x for x in labels if labels.count(x) > 1})}")
        if not isinstance(template, str) or template.count("{}") != 1:
            raise InputError("template", f"must contain exactly one {{}} where the label goes, got {template!r}")
        image_feat = self.embed_images(images)
        text_feat = self.embed_texts([template.format(label) for label in labels])
        probs = (image_feat @ text_feat.T / self.temperature).softmax(-1)
        out = []
        for row in probs.tolist():
            best = int(np.argmax(row))
            out.append(Classification(labels[best], row[best], dict(zip(labels, row, strict=False))))
        return out

    # ------------------------------------------------------------------ fine-tuned tasks
    def _task(self, method: str, video: bool = False) -> Any:
        protocol, what, plugin = _TASKS[method]
        task = self.model.task
        if task is not None and isinstance(task, protocol):
            return task
        plugin = "video_qa" if video and method == "answer" else plugin
        state = f"was fine-tuned for {task.name}" if task is not None else "is not fine-tuned for a task"
        raise MissingTaskError(
            f"checkpoint {self.path} {state}, so it cannot {what}; fine-tune it with "
            f"x2vlm finetune --task {plugin} --checkpoint {self.path} --config configs/tasks/{plugin}.yaml"
        )

    def _task_visuals(self, items: Sequence[Any], video: bool, field: str) -> Tensor:
        return self._normalised(self._prepare(items, video, 0, field))

    @overload
    def answer(self, images: ImageInput, questions: str, video: bool = False) -> Prediction: ...

    @overload
    def answer(self, images: Sequence[ImageInput], questions: Sequence[str], video: bool = False) -> list[Prediction]: ...

    @torch.no_grad()
    def answer(self, images: Any, questions: str | Sequence[str], video: bool = False) -> Prediction | list[Prediction]:
        """The checkpoint's VQA (video QA with `video`) task: one answer per (image, question). A single
        question (a string) about a single image returns one Prediction."""
        task = self._task("answer", video)
        single = isinstance(questions, str)
        items = [images] if single else (_video_list(images) if video else _image_list(images))
        asked = check_texts([questions] if single else questions, "questions")
        _same_length(items, asked, "questions")
        out: list[Prediction] = []
        for s in self._chunks(len(items), "answers", False, None):
            visuals = self._task_visuals(items[s], video, "images")
            out.extend(task.answer(self.model, visuals, asked[s], video=video))
        return out[0] if single else out

    @overload
    def verify(self, left: ImageInput, right: ImageInput, statements: str) -> Prediction: ...

    @overload
    def verify(self, left: Sequence[ImageInput], right: Sequence[ImageInput],
               statements: Sequence[str]) -> list[Prediction]: ...

    @torch.no_grad()
    def verify(self, left: Any, right: Any, statements: str | Sequence[str]) -> Prediction | list[Prediction]:
        """The checkpoint's NLVR2 task: whether each statement is true of its (left, right) image pair;
        score = p(true). A single statement (a string) returns one Prediction."""
        task = self._task("verify")
        single = isinstance(statements, str)
        lefts, rights = ([left], [right]) if single else (_image_list(left), _image_list(right))
        said = check_texts([statements] if single else statements, "statements")
        _same_length(lefts, said, "statements")
        _same_length(lefts, rights, "right")
        out: list[Prediction] = []
        for s in self._chunks(len(said), "verdicts", False, None):
            out.extend(task.verify(self.model, self._task_visuals(lefts[s], False, "left"),
                                   self._task_visuals(rights[s], False, "right"), said[s]))
        return out[0] if single else out

    @torch.no_grad()
    def caption(self, images: Any, video: bool = False) -> Prediction | list[Prediction]:
        """The checkpoint's captioning task: one caption per image (clip with `video`). A single image (not
        a list) returns one Prediction."""
        task = self._task("caption")
        single = _is_single(images, video)
        items = [images] if single else (_video_list(images) if video else _image_list(images))
        out: list[Prediction] = []
        for s in self._chunks(len(items), "captions", False, None):
            out.extend(task.caption(self.model, self._task_visuals(items[s], video, "images"), video=video))
        return out[0] if single else out


def _item_id(item: Any, row: int, field: str = "corpus") -> str:
    """An item's id: the text or the path itself, else its position (`corpus[3]`)."""
    return str(item) if isinstance(item, (str, Path)) else f"{field}[{row}]"


def _is_single(value: Any, video: bool) -> bool:
    if isinstance(value, (str, Path, bytes, bytearray, memoryview)):
        return True
    if isinstance(value, (np.ndarray, Tensor)):
        return value.ndim <= (4 if video else 3)
    return type(value).__module__.startswith("PIL.")


def _image_list(images: Any) -> list[Any]:
    """One image or a sequence of them (a 4-D array is a batch [B, ...]) → a list."""
    if _is_single(images, video=False):
        return [images]
    if isinstance(images, (np.ndarray, Tensor)):
        return list(images)
    if isinstance(images, Sequence):
        return list(images)
    raise InputError("images", f"cannot read images from a {type(images).__name__}; give a path, an image, "
                     "or a list of them")


def _video_list(videos: Any) -> list[Any]:
    """One clip or a sequence of clips (a 5-D array is a batch; a clip as frames must be nested: [[f0, f1]])."""
    if _is_single(videos, video=True):
        return [videos]
    if isinstance(videos, (np.ndarray, Tensor, Sequence)):
        return list(videos)
    raise InputError("videos", f"cannot read clips from a {type(videos).__name__}; give a video path or a list")


def _same_length(a: Sequence[Any], b: Sequence[Any], field: str) -> None:
    if len(a) != len(b):
        raise InputError(field, f"{len(b)} given for {len(a)} images; give one each")
