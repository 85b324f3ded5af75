"""Nearest neighbours by inner product over L2-normalised embeddings [N, E]: exact with torch or faiss, or
approximate with faiss HNSW.

faiss is an optional extra (`pip install faiss-cpu`); `backend="auto"` takes faiss's exact flat index when
it is installed and plain torch otherwise: both are exact, so they return the same neighbours (up to ties).
"""

from __future__ import annotations

import importlib.util
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

__all__ = ["BACKENDS", "FaissSearcher", "Searcher", "TorchSearcher", "faiss_available", "make_searcher"]

BACKENDS = ("auto", "torch", "faiss", "faiss-hnsw")
_QUERY_BLOCK = 256  # queries per matrix product: [256, N] float32 scores stay ~100 MB at N = 100k


def faiss_available() -> bool:
    """Whether the optional faiss package is importable."""
    return importlib.util.find_spec("faiss") is not None


class Searcher(Protocol):
    name: str

    def topk(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """queries float32 [Q, E] → (inner products [Q, k], rows [Q, k] long), best first."""
        ...


class TorchSearcher:
    """Exact search: one matrix product per block of queries, then top-k."""

    name = "torch"

    def __init__(self, embeddings: Tensor) -> None:
        self.embeddings = embeddings.float().contiguous()

    def topk(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        k = min(k, self.embeddings.shape[0])
        sims, rows = [], []
        for i in range(0, queries.shape[0], _QUERY_BLOCK):
            s, r = (queries[i : i + _QUERY_BLOCK].float() @ self.embeddings.T).topk(k, dim=1)
            sims.append(s)
            rows.append(r)
        return torch.cat(sims), torch.cat(rows)


class FaissSearcher:
    """faiss inner-product search: IndexFlatIP (exact) or IndexHNSWFlat (approximate, `hnsw_m` links per node,
    efSearch = max(ef_search, 2k) at query time)."""

    def __init__(self, embeddings: Tensor, hnsw_m: int | None = None, ef_search: int = 128) -> None:
        import faiss

        data = np.ascontiguousarray(embeddings.float().numpy())
        dim = data.shape[1]
        self.ef_search = ef_search
        if hnsw_m is None:
            self.name, self.index = "faiss", faiss.IndexFlatIP(dim)
        else:
            self.name = "faiss-hnsw"
            self.index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = max(40, 2 * hnsw_m)
        self.index.add(data)
        self.count = data.shape[0]

    def topk(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        k = min(k, self.count)
        if self.name == "faiss-hnsw":
            self.index.hnsw.efSearch = max(self.ef_search, 2 * k)
        sims, rows = self.index.search(np.ascontiguousarray(queries.float().numpy()), k)
        return torch.from_numpy(sims), torch.from_numpy(rows).long()


def make_searcher(embeddings: Tensor, backend: str = "auto", **options: Any) -> Searcher:
    """A searcher over embeddings [N, E] (N ≥ 1) for `backend` (one of BACKENDS)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown search backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if embeddings.shape[0] == 0:
        raise ValueError("cannot search an empty index; build it with some images first")
    if backend == "torch" or (backend == "auto" and not faiss_available()):
        return TorchSearcher(embeddings)
    if not faiss_available():
        raise ValueError(f"search backend {backend!r} needs faiss: pip install faiss-cpu (or use --backend torch)")
    return FaissSearcher(embeddings, hnsw_m=options.get("hnsw_m", 32) if backend == "faiss-hnsw" else None,
                         ef_search=options.get("ef_search", 128))
