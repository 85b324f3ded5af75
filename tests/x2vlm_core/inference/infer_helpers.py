"""Helpers of the inference tests: synthetic scenes as files, a free port, waiting for a server."""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from x2vlm_core.contracts import ConceptKind, Sample
from x2vlm_core.data.shards import encode_png
from x2vlm_core.discovery import default_registry


@dataclass(frozen=True)
class Scenes:
    """Held-out synthetic scenes written as PNG files: paths, first captions, first object (text, box)."""

    dir: Path
    paths: list[Path]
    captions: list[str]
    objects: list[tuple[str, tuple[float, float, float, float]]]
    samples: list[Sample]


def write_scenes(out: Path, n: int, seed: int = 0) -> Scenes:
    out.mkdir(parents=True, exist_ok=True)
    source = default_registry().build("data", {"plugin": "synthetic", "split": "test", "kind": "image",
                                               "seed": seed}, "scenes")
    samples = list(itertools.islice(iter(source), n))  # type: ignore[call-overload]
    paths, objects = [], []
    for i, s in enumerate(samples):
        path = out / f"scene-{i:03d}.png"
        path.write_bytes(encode_png(s.image))
        paths.append(path)
        obj = next(c for c in s.concepts if c.kind == ConceptKind.OBJECT)
        objects.append((obj.text, obj.box))
    return Scenes(out, paths, [s.captions[0] for s in samples], objects, samples)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"x2vlm serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/info", timeout=2) as response:
                if response.status == 200:
                    json.loads(response.read())
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"x2vlm serve did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")
