"""The HTTP server: a Pipeline (and optionally an index) behind FastAPI, with dynamic batching and a web page.

Endpoints (JSON in and out; images and clips as base64 strings, a `data:...;base64,` prefix allowed):

    GET  /                 a page: upload an image, type a phrase, see its box, the index's hits or an answer
    GET  /info             the checkpoint, its preprocessing, what it can do, batching statistics
    POST /embed            {images?, videos?, texts?}               → {images: [[E]], videos: ..., texts: ...}
    POST /score            {images, texts, rerank?}                 → Scores (similarity [I, T], match, logits)
    POST /ground           {image, text (one or a list)}            → Grounding (box, pixels, score)
    POST /classify         {images, labels, template?}              → [Classification]
    POST /search           {query (one or a list), k?, rerank?, ground?} → Retrieval (needs --index)
    GET  /index/thumbnail/{row}   PNG of an indexed item (the page shows hits with it)
    POST /answer, /verify, /caption   the checkpoint's fine-tuned task (404 naming the task to fine-tune otherwise)

Every request body is validated by a pydantic model; a bad one is a 4xx whose `error` names the field
(422; 413 for inputs over a limit: body bytes, image bytes, pixels, items per request). The model runs in
one thread; concurrent requests are batched per operation (inference/batching.py). Errors in one request
never stop the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from x2vlm_core.data.transforms import resize
from x2vlm_core.inference.batching import Batcher
from x2vlm_core.inference.index import IndexFileError, SearchIndex
from x2vlm_core.inference.inputs import InputError, InputLimits, check_texts, to_image, to_video
from x2vlm_core.inference.pipeline import MissingTaskError, Pipeline
from x2vlm_core.inference.results import prediction_dict

__all__ = ["ServerLimits", "create_app", "serve"]

logger = logging.getLogger(__name__)
_PAGE = Path(__file__).with_name("assets") / "index.html"


@dataclass(frozen=True)
class ServerLimits:
    """What one request may hold: body bytes, encoded bytes per image, decoded pixels per image (refused
    above, never reduced), items per list (images, texts, labels, queries) and characters per text; and the
    dynamic batching: items per model call and the longest wait for more (seconds)."""

    max_body_bytes: int = 64 * 1024 * 1024
    max_image_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_items: int = 32
    max_text_chars: int = 2000
    batch_items: int = 32
    batch_wait_s: float = 0.005

    def inputs(self) -> InputLimits:
        return InputLimits(max_pixels=self.max_pixels, max_bytes=self.max_image_bytes, strict=True)


# ------------------------------------------------------------------ request bodies
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbedRequest(_Body):
    images: list[str] = Field(default_factory=list, description="base64 images")
    videos: list[str] = Field(default_factory=list, description="base64 video files")
    texts: list[str] = Field(default_factory=list)


class ScoreRequest(_Body):
    images: list[str] = Field(min_length=1)
    texts: list[str] = Field(min_length=1)
    rerank: bool = Field(False, description="also p(match) of every pair from the matching head")


class GroundRequest(_Body):
    image: str
    text: str | list[str]


class ClassifyRequest(_Body):
    images: list[str] = Field(min_length=1)
    labels: list[str] = Field(min_length=1)
    template: str = "a photo of a {}"


class SearchRequest(_Body):
    query: str | list[str]
    k: int = Field(10, ge=1, le=100)
    rerank: int = Field(0, ge=0, le=256)
    ground: bool = False


class AnswerRequest(_Body):
    image: str
    question: str
    video: bool = False


class VerifyRequest(_Body):
    left: str
    right: str
    statement: str


class CaptionRequest(_Body):
    image: str
    video: bool = False


# ------------------------------------------------------------------ the body-size limit
class _BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 without reading more of it (the body
    is read here, up to the limit, and replayed to the app)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await _plain_413(send, self.limit)
            return
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.limit:
                await _plain_413(send, self.limit)
                return
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed() -> Any:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)


async def _plain_413(send: Callable[[Any], Awaitable[None]], limit: int) -> None:
    import json

    body = json.dumps({"error": f"request body is larger than {limit:,} bytes; send fewer or smaller images",
                       "field": "body"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------ the app
class _Service:
    """What the endpoints share: the pipeline, the index, limits, the batcher, and decoding off the loop."""

    def __init__(self, pipeline: Pipeline, index: SearchIndex | None, limits: ServerLimits) -> None:
        self.pipeline, self.index, self.limits = pipeline, index, limits
        self.inputs = limits.inputs()
        self.batcher = Batcher(limits.batch_items, limits.batch_wait_s)
        if index is not None:
            index.check(pipeline)

    # --- validation and decoding (in threads: decoding is CPU work the event loop must not do)
    def items(self, values: list[Any], field: str) -> None:
        if len(values) > self.limits.max_items:
            raise InputError(field, f"{len(values)} items, more than the {self.limits.max_items} accepted per "
                             "request; split it into several requests", status=413)

    def texts(self, values: str | list[str], field: str) -> list[str]:
        """Validated texts; a single string (a field holding one text) is named by the field alone."""
        single = isinstance(values, str)
        values = [values] if isinstance(values, str) else values
        self.items(values, field)
        try:
            for i, text in enumerate(values):
                if len(text) > self.limits.max_text_chars:
                    raise InputError(f"{field}[{i}]", f"{len(text)} characters, more than the "
                                     f"{self.limits.max_text_chars} accepted", status=413)
            return check_texts(values, field)
        except InputError as error:
            if not single:
                raise
            raise InputError(field, str(error).split(": ", 1)[1], error.status) from None

    def _bytes(self, value: str, field: str) -> bytes:
        data = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
        if len(data) * 3 // 4 > self.limits.max_image_bytes + 3:
            raise InputError(field, f"about {len(data) * 3 // 4:,} bytes, more than the "
                             f"{self.limits.max_image_bytes:,} accepted per file; send a smaller file", status=413)
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InputError(field, "not valid base64; send the file's bytes base64-encoded (a data: URL is "
                             "fine)") from None

    async def image(self, value: str, field: str) -> Tensor:
        return await asyncio.to_thread(lambda: to_image(self._bytes(value, field), field, self.inputs))

    async def images(self, values: list[str], field: str) -> list[Tensor]:
        self.items(values, field)
        return list(await asyncio.gather(*(self.image(v, f"{field}[{i}]") for i, v in enumerate(values))))

    async def videos(self, values: list[str], field: str) -> list[Tensor]:
        self.items(values, field)
        frames = self.pipeline.preprocess.frames
        return list(await asyncio.gather(*(
            asyncio.to_thread(lambda v=v, f=f"{field}[{i}]": to_video(self._bytes(v, f), f, frames, self.inputs))
            for i, v in enumerate(values))))

    # --- model work, batched across requests (each runs in the model thread)
    async def run(self, op: tuple[Any, ...], fn: Callable[[list[Any]], list[Any]], items: list[Any]) -> list[Any]:
        return await self.batcher.submit(op, fn, items)

    def _embed_images(self, items: list[Tensor]) -> list[list[float]]:
        size = self.pipeline.preprocess.image_size
        return self.pipeline.image_features(torch.stack([resize(x, size) for x in items])).tolist()

    def _embed_videos(self, items: list[Tensor]) -> list[list[float]]:
        return self.pipeline.image_features(self.pipeline.prepare_videos(items), video=True).tolist()

    def _embed_texts(self, items: list[str]) -> list[list[float]]:
        return self.pipeline.embed_texts(items, progress=False).tolist()

    def _ground(self, items: list[tuple[Tensor, str]]) -> list[Any]:
        return self.pipeline.ground_pairs([i for i, _ in items], [t for _, t in items])

    def _match(self, items: list[tuple[Tensor, str]]) -> list[float]:
        """p(match) of (image, text) pairs; each distinct image (by identity) is encoded once."""
        images: dict[int, int] = {}
        unique: list[Tensor] = []
        for image, _ in items:
            if id(image) not in images:
                images[id(image)] = len(unique)
                unique.append(image)
        size = self.pipeline.preprocess.image_size
        tokens = self.pipeline.visual_tokens(torch.stack([resize(x, size) for x in unique]))
        rows = torch.tensor([images[id(i)] for i, _ in items])
        return self.pipeline.match_scores([t for _, t in items], torch.arange(len(items)), tokens, rows).tolist()


def _error_body(message: str, field: str | None) -> dict[str, Any]:
    return {"error": message, "field": field}


def create_app(pipeline: Pipeline, index: SearchIndex | None = None, limits: ServerLimits = ServerLimits()) -> Any:
    """The FastAPI app serving `pipeline` (and `index`); needs the `serve` extra (fastapi, uvicorn)."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import HTMLResponse, JSONResponse, Response
    except ImportError as error:  # pragma: no cover - the optional extra
        raise ImportError("the server needs FastAPI and uvicorn: pip install 'x2vlm[serve]'") from error

    service = _Service(pipeline, index, limits)

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        service.batcher.start()
        yield
        await service.batcher.stop()

    app = FastAPI(title="X²-VLM", description=__doc__, lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        field = None
        for item in error.errors():
            loc = [str(p) for p in item.get("loc", ()) if p != "body"]
            field = field or (".".join(loc) or "body")
            problems.append(f"{'.'.join(loc) or 'body'}: {item.get('msg', 'invalid')}")
        message = "; ".join(problems[:5]) or "invalid request body"
        if any(e.get("type") == "json_invalid" for e in error.errors()):
            detail = error.errors()[0].get("ctx", {}).get("error", "")
            message, field = f"the request body is not valid JSON ({detail or 'decode error'})", "body"
        return JSONResponse(_error_body(message, field), status_code=422)

    @app.exception_handler(InputError)
    async def _bad_input(_: Request, error: InputError) -> JSONResponse:
        return JSONResponse(_error_body(str(error), error.field), status_code=error.status)

    @app.exception_handler(MissingTaskError)
    async def _no_task(_: Request, error: MissingTaskError) -> JSONResponse:
        return JSONResponse(_error_body(str(error), None), status_code=404)

    @app.exception_handler(IndexFileError)
    async def _index_error(_: Request, error: IndexFileError) -> JSONResponse:
        return JSONResponse(_error_body(str(error), None), status_code=404)

    @app.exception_handler(Exception)
    async def _internal(_: Request, error: Exception) -> JSONResponse:
        logger.exception("request failed")
        return JSONResponse(_error_body(f"internal error ({type(error).__name__}: {error})", None), status_code=500)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(_PAGE.read_text(encoding="utf-8"))

    @app.get("/info")
    async def info() -> dict[str, Any]:
        out = pipeline.describe()
        out["index"] = None if index is None else {"path": str(index.path), "items": len(index),
                                                    "kind": index.manifest.kind}
        out["limits"] = {k: getattr(limits, k) for k in ("max_body_bytes", "max_image_bytes", "max_pixels",
                                                          "max_items", "max_text_chars")}
        out["batching"] = service.batcher.stats.to_dict()
        return out

    @app.post("/embed")
    async def embed(body: EmbedRequest) -> dict[str, Any]:
        if not (body.images or body.videos or body.texts):
            raise InputError("body", "give images, videos or texts to embed")
        if body.videos and not pipeline.capabilities()["video"]:
            raise InputError("videos", "this checkpoint has no video plugin and cannot embed clips")
        texts = service.texts(body.texts, "texts") if body.texts else []
        images = await service.images(body.images, "images")
        videos = await service.videos(body.videos, "videos")
        out: dict[str, Any] = {}
        jobs = []
        for name, op, fn, items in (("images", ("embed_images",), service._embed_images, images),
                                    ("videos", ("embed_videos",), service._embed_videos, videos),
                                    ("texts", ("embed_texts",), service._embed_texts, texts)):
            if items:
                jobs.append((name, service.run(op, fn, items)))
        for name, result in zip([n for n, _ in jobs], await asyncio.gather(*(j for _, j in jobs)), strict=False):
            out[name] = result
        return out

    @app.post("/score")
    async def score(body: ScoreRequest) -> dict[str, Any]:
        texts = service.texts(body.texts, "texts")
        images = await service.images(body.images, "images")
        image_feat, text_feat = await asyncio.gather(service.run(("embed_images",), service._embed_images, images),
                                                     service.run(("embed_texts",), service._embed_texts, texts))
        sim = torch.tensor(image_feat) @ torch.tensor(text_feat).T
        out: dict[str, Any] = {"similarity": sim.tolist(), "temperature": pipeline.temperature}
        if body.rerank:
            if len(images) * len(texts) > limits.max_items * 4:
                raise InputError("rerank", f"{len(images)} × {len(texts)} pairs is too many to re-rank in one "
                                 f"request (at most {limits.max_items * 4})", status=413)
            pairs = [(image, text) for image in images for text in texts]
            match = await service.run(("match",), service._match, pairs)
            out["match"] = torch.tensor(match).view(len(images), len(texts)).tolist()
        return out

    @app.post("/ground")
    async def ground(body: GroundRequest) -> Any:
        phrases = service.texts(body.text, "text")
        image = await service.image(body.image, "image")
        results = await service.run(("ground",), service._ground, [(image, p) for p in phrases])
        dicts = [r.to_dict() for r in results]
        return dicts[0] if isinstance(body.text, str) else dicts

    @app.post("/classify")
    async def classify(body: ClassifyRequest) -> list[dict[str, Any]]:
        labels = service.texts(body.labels, "labels")
        if len(set(labels)) != len(labels):
            raise InputError("labels", "labels repeat; give each once")
        if body.template.count("{}") != 1:
            raise InputError("template", f"must contain exactly one {{}} where the label goes, got {body.template!r}")
        images = await service.images(body.images, "images")
        image_feat, text_feat = await asyncio.gather(
            service.run(("embed_images",), service._embed_images, images),
            service.run(("embed_texts",), service._embed_texts, [body.template.format(x) for x in labels]))
        probs = (torch.tensor(image_feat) @ torch.tensor(text_feat).T / pipeline.temperature).softmax(-1)
        out = []
        for row in probs.tolist():
            best = max(range(len(labels)), key=lambda j: row[j])
            out.append({"label": labels[best], "score": row[best], "scores": dict(zip(labels, row, strict=False))})
        return out

    @app.post("/search")
    async def search(body: SearchRequest) -> Any:
        if index is None:
            raise IndexFileError("this server has no index; start it with x2vlm serve --index IDX "
                                 "(build one with x2vlm index build)")
        queries = service.texts(body.query, "query")

        def run(items: list[str]) -> list[Any]:
            return index.search(pipeline, items, k=body.k, rerank=body.rerank, ground=body.ground)

        results = await service.run(("search", body.k, body.rerank, body.ground), run, queries)
        dicts = [r.to_dict() for r in results]
        return dicts[0] if isinstance(body.query, str) else dicts

    @app.get("/index/thumbnail/{row}")
    async def thumbnail(row: int) -> Response:
        if index is None or not 0 <= row < len(index):
            raise InputError("row", f"no indexed item {row}" + ("" if index is None else f" (0..{len(index) - 1})"))
        png = await asyncio.to_thread(_thumbnail_png, index, row)
        return Response(png, media_type="image/png")

    @app.post("/answer")
    async def answer(body: AnswerRequest) -> dict[str, Any]:
        pipeline._task("answer", body.video)  # 404 naming the task to fine-tune, before decoding anything
        question = service.texts(body.question, "question")[0]
        visual = (await service.videos([body.image], "image"))[0] if body.video else await service.image(body.image, "image")

        def run(items: list[tuple[Tensor, str]]) -> list[Any]:
            return pipeline.answer([v for v, _ in items], [q for _, q in items], video=body.video)

        [result] = await service.run(("answer", body.video), run, [(visual, question)])
        return prediction_dict(result)

    @app.post("/verify")
    async def verify(body: VerifyRequest) -> dict[str, Any]:
        pipeline._task("verify")
        statement = service.texts(body.statement, "statement")[0]
        left, right = await asyncio.gather(service.image(body.left, "left"), service.image(body.right, "right"))

        def run(items: list[tuple[Tensor, Tensor, str]]) -> list[Any]:
            return pipeline.verify([a for a, _, _ in items], [b for _, b, _ in items], [s for _, _, s in items])

        [result] = await service.run(("verify",), run, [(left, right, statement)])
        return prediction_dict(result)

    @app.post("/caption")
    async def caption(body: CaptionRequest) -> dict[str, Any]:
        pipeline._task("caption")
        visual = (await service.videos([body.image], "image"))[0] if body.video else await service.image(body.image, "image")

        def run(items: list[Tensor]) -> list[Any]:
            out = pipeline.caption(list(items), video=body.video)
            return out if isinstance(out, list) else [out]

        [result] = await service.run(("caption", body.video), run, [visual])
        return prediction_dict(result)

    app.add_middleware(_BodyLimit, limit=limits.max_body_bytes)
    return app


def _thumbnail_png(index: SearchIndex, row: int, side: int = 256) -> bytes:
    from PIL import Image

    pixels = index.thumbnail(row)
    image = Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy(), "RGB")
    image.thumbnail((side, side)) if max(image.size) > side else None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def serve(pipeline: Pipeline, index: SearchIndex | None = None, host: str = "127.0.0.1", port: int = 8000,
          limits: ServerLimits = ServerLimits(), log_level: str = "info") -> None:
    """Serve until interrupted (uvicorn, one process). Binds to localhost unless `host` says otherwise."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("serving on %s: anyone who can reach this address can use the model (no authentication)",
                       host)
    uvicorn.run(create_app(pipeline, index, limits), host=host, port=port, log_level=log_level)
