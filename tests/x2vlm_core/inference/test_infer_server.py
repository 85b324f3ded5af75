"""The HTTP server through FastAPI's test client (every endpoint, every kind of bad request, batching) and one
real uvicorn process on a free loopback port."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from infer_helpers import Scenes, Server

from x2vlm_core.inference import Pipeline
from x2vlm_core.inference.index import SearchIndex, build_index
from x2vlm_core.inference.server import ServerLimits, create_app


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def index(pipe: Pipeline, scenes: Scenes, tmp_path_factory: pytest.TempPathFactory) -> SearchIndex:
    out = tmp_path_factory.mktemp("server-index") / "idx"
    build_index(pipe, out, images=scenes.dir, progress=False)
    return SearchIndex.open(out)


@pytest.fixture(scope="module")
def client(pipe: Pipeline, index: SearchIndex) -> TestClient:
    limits = ServerLimits(max_body_bytes=2_000_000, max_image_bytes=500_000, max_pixels=1_000_000, max_items=8)
    with TestClient(create_app(pipe, index, limits)) as c:
        yield c


def test_info_and_page(client: TestClient, pipe: Pipeline) -> None:
    info = client.get("/info").json()
    assert info["checkpoint"] == str(pipe.path) and info["index"]["items"] == 12
    assert info["capabilities"]["answer"] is False and info["limits"]["max_items"] == 8
    page = client.get("/")
    assert page.status_code == 200 and 'id="ground"' in page.text and "/ground" in page.text


def test_endpoints_return_what_the_pipeline_computes(client: TestClient, pipe: Pipeline, scenes: Scenes) -> None:
    images = [b64(p) for p in scenes.paths[:2]]
    texts = scenes.captions[:3]
    embedded = client.post("/embed", json={"images": images, "texts": texts}).json()
    assert torch.allclose(torch.tensor(embedded["images"]), pipe.embed_images(scenes.paths[:2]), atol=1e-5)
    assert torch.allclose(torch.tensor(embedded["texts"]), pipe.embed_texts(texts), atol=1e-5)

    scored = client.post("/score", json={"images": images, "texts": texts, "rerank": True}).json()
    expected = pipe.score(scenes.paths[:2], texts, rerank=True)
    assert torch.allclose(torch.tensor(scored["similarity"]), expected.similarity, atol=1e-5)
    assert expected.match is not None and torch.allclose(torch.tensor(scored["match"]), expected.match, atol=1e-5)

    data_url = "data:image/png;base64," + images[0]
    grounded = client.post("/ground", json={"image": data_url, "text": "a red circle"}).json()
    g = pipe.ground(scenes.paths[0], "a red circle")
    assert grounded["box"]["xyxy"] == pytest.approx(list(g.box.xyxy()), abs=1e-5)
    assert grounded["score"] == pytest.approx(g.score, abs=1e-5) and grounded["width"] == 64
    several = client.post("/ground", json={"image": images[0], "text": ["a red circle", "a star"]}).json()
    assert [x["text"] for x in several] == ["a red circle", "a star"]

    labels = ["circle", "square", "star"]
    classified = client.post("/classify", json={"images": images, "labels": labels}).json()
    assert [c["label"] for c in classified] == [c.label for c in pipe.classify(scenes.paths[:2], labels)]

    found = client.post("/search", json={"query": texts[0], "k": 3, "rerank": 5, "ground": True}).json()
    [reference] = pipe.retrieve([texts[0]], scenes.paths, k=3, rerank=5)
    assert [h["index"] for h in found["hits"]] == [h.index for h in reference.hits]
    assert all("box" in h for h in found["hits"])
    thumb = client.get(f"/index/thumbnail/{found['hits'][0]['index']}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"


@pytest.mark.parametrize(("path", "body", "status", "field", "needle"), [
    ("/ground", {"image": "x"}, 422, "text", "Field required"),
    ("/ground", {"image": 3, "text": "x"}, 422, "image", "valid string"),
    ("/ground", {"image": "!!not base64!!", "text": "x"}, 422, "image", "not valid base64"),
    ("/ground", {"image": base64.b64encode(b"GIF89a broken").decode(), "text": "x"}, 422, "image",
     "corrupt or truncated GIF"),
    ("/ground", {"image": base64.b64encode(b"%PDF-1.4").decode(), "text": "x"}, 422, "image", "not an image file"),
    ("/ground", {"image": "AAAA", "text": "   "}, 422, "text", "empty text"),
    ("/embed", {}, 422, "body", "give images, videos or texts"),
    ("/embed", {"texts": ["a"] * 9}, 413, "texts", "more than the 8 accepted"),
    ("/embed", {"texts": ["a", ""]}, 422, "texts[1]", "empty text"),
    ("/embed", {"texts": ["x" * 3000]}, 413, "texts[0]", "characters"),
    ("/embed", {"pictures": ["a"]}, 422, "pictures", "Extra inputs"),
    ("/search", {"query": "x", "k": 0}, 422, "k", "greater than or equal to 1"),
    ("/classify", {"images": ["AAAA"], "labels": ["a"], "template": "no slot"}, 422, "template", "exactly one"),
    ("/answer", {"image": "AAAA", "question": "what?"}, 404, None, "--task vqa"),
    ("/verify", {"left": "AAAA", "right": "AAAA", "statement": "x"}, 404, None, "--task nlvr2"),
    ("/caption", {"image": "AAAA"}, 404, None, "--task captioning"),
])
def test_bad_requests_are_4xx_naming_the_field(client: TestClient, path: str, body: dict[str, object], status: int,
                                               field: str | None, needle: str) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    data = response.json()
    assert data["field"] == field and needle in data["error"]


def test_malformed_oversized_and_huge_inputs_then_it_keeps_serving(client: TestClient, scenes: Scenes,
                                                                  huge_png: Path) -> None:
    malformed = client.post("/ground", content=b'{"image": "abc", "text": ', headers={"content-type": "application/json"})
    assert malformed.status_code == 422 and malformed.json()["field"] == "body"
    assert "not valid JSON" in malformed.json()["error"]
    huge = client.post("/ground", json={"image": b64(huge_png), "text": "a circle"})
    assert huge.status_code == 413 and huge.json()["field"] == "image" and "too large" in huge.json()["error"]
    body = client.post("/embed", content=b"x" * 2_100_000, headers={"content-type": "application/json"})
    assert body.status_code == 413 and body.json()["field"] == "body"
    big_file = client.post("/ground", json={"image": "A" * 700_000, "text": "x"})
    assert big_file.status_code == 413 and "accepted per file" in big_file.json()["error"]
    ok = client.post("/ground", json={"image": b64(scenes.paths[0]), "text": "a red circle"})
    assert ok.status_code == 200 and client.get("/info").status_code == 200


def test_a_pixel_budget_refuses_instead_of_shrinking(pipe: Pipeline) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1200, 1000), "white").save(buffer, format="PNG")
    with TestClient(create_app(pipe, None, ServerLimits(max_pixels=1_000_000))) as c:
        response = c.post("/ground", json={"image": base64.b64encode(buffer.getvalue()).decode(), "text": "x"})
        assert response.status_code == 413 and "1200x1000 is 1.2 megapixels" in response.json()["error"]
        assert c.post("/search", json={"query": "x"}).status_code == 404  # no index: says how to add one
        assert "--index" in c.post("/search", json={"query": "x"}).json()["error"]


def test_task_endpoints_on_a_fine_tuned_checkpoint(qa_pipe: Pipeline, scenes: Scenes) -> None:
    image = b64(scenes.paths[0])
    with TestClient(create_app(qa_pipe)) as c:
        assert c.get("/info").json()["capabilities"]["answer"] is True
        answer = c.post("/answer", json={"image": image, "question": "what colour is it?"}).json()
        assert answer == pytest.approx({"text": qa_pipe.answer(scenes.paths[0], "what colour is it?").text,
                                        "score": qa_pipe.answer(scenes.paths[0], "what colour is it?").score})
        verdict = c.post("/verify", json={"left": image, "right": b64(scenes.paths[1]), "statement": "a circle"})
        assert verdict.status_code == 200 and verdict.json()["text"] in ("true", "false")
        caption = c.post("/caption", json={"image": image}).json()
        assert caption["text"] == qa_pipe.caption(scenes.paths[0]).text


def test_concurrent_requests_are_batched_with_the_same_results(pipe: Pipeline, scenes: Scenes) -> None:
    app = create_app(pipe, None, ServerLimits(batch_items=32, batch_wait_s=0.05))
    bodies = [{"image": b64(scenes.paths[i % 12]), "text": scenes.captions[i % 12]} for i in range(16)]

    async def main() -> list[dict[str, object]]:
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport,
                                                                          base_url="http://test") as c:
            responses = await asyncio.gather(*(c.post("/ground", json=b) for b in bodies))
            stats = (await c.get("/info")).json()["batching"]
        assert all(r.status_code == 200 for r in responses)
        assert stats["items"] == 16 and stats["batches"] < 16 and stats["largest"] > 1
        return [r.json() for r in responses]

    results = asyncio.run(main())
    for i, result in enumerate(results):
        alone = pipe.ground(scenes.paths[i % 12], scenes.captions[i % 12])
        assert result["box"]["xyxy"] == pytest.approx(list(alone.box.xyxy()), abs=1e-5)


@pytest.mark.slow  # a second process (~20 s to start on 2 busy cores)
def test_a_real_uvicorn_process(live_server: Server, scenes: Scenes) -> None:
    with urllib.request.urlopen(f"{live_server.url}/info", timeout=30) as response:
        assert json.loads(response.read())["index"]["items"] == 12
    request = urllib.request.Request(f"{live_server.url}/ground", method="POST",
                                     data=json.dumps({"image": b64(scenes.paths[0]), "text": "a red circle"}).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert 0.0 <= json.loads(response.read())["box"]["cx"] <= 1.0
    bad = urllib.request.Request(f"{live_server.url}/ground", method="POST", data=b"{oops",
                                 headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(bad, timeout=30)
    assert caught.value.code == 422
    assert live_server.process.poll() is None  # still serving
    assert live_server.url.startswith("http://127.0.0.1:")
