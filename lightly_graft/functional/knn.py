"""Weighted k-nearest-neighbour classification of features (kNN monitor / eval).

The vote is the one of InstDisc (Wu et al., 2018, https://arxiv.org/abs/1805.01978)
as implemented by lightly's ``knn_predict`` (lightly/utils/benchmarking/knn.py):
each of the ``k`` most similar bank features votes for its label with weight
``exp(cos_sim / temperature)``; classes are ranked by their summed weight.

lightly's ``knn_predict`` builds the full (queries, bank) similarity matrix and a
one-hot (queries, k, classes) tensor: 4.7 GB for a 50k bank, 10k queries and 100
classes. Here queries are processed in chunks and the vote is a ``scatter_add``,
so memory stays O(chunk x classes) for the vote, and O(num_queries x k) for the
faiss CPU search's neighbours (O(chunk x bank) on the torch path).

Two search backends share one signature and give the same neighbours (exact
search, up to ties):

- ``"faiss"``: on CUDA tensors with a GPU build of faiss, faiss's GPU brute-force
  inner-product search (``faiss.knn_gpu``); on CPU, faiss's exact CPU search
  (``faiss.knn``, what ``IndexFlatIP.search`` runs, without copying the bank into
  an index), over all queries in one call so that faiss's OpenMP threads split
  them; for k >= 100 it keeps each query's top-k in a reservoir
  (``distance_compute_min_k_reservoir``), not a heap. An earlier path here (torch
  GEMM tiles of 1024 x 16384 + faiss's heap, on Python threads) was 29% slower
  than this plain search (bank 50k x 384, 10k queries, k=200,
  benchmarks/knn_bench.py); profiled single-threaded, its heap updates alone took
  17% of the time.
- ``"torch"``: brute force in torch (matmul + ``topk``), the reference; also the
  path on CUDA when faiss has no GPU support, and the fallback (with a one-time
  warning) when faiss is not installed. faiss is an optional extra
  (``pip install lightly-graft[faiss]``).
"""

from __future__ import annotations

import functools
import warnings
from types import ModuleType
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lightly_graft.errors import GraftError, format_options

Backend = Literal["auto", "faiss", "torch"]
BACKENDS: tuple[str, ...] = ("auto", "faiss", "torch")

# faiss's GPU k-selection supports k <= 2048 (GPU_MAX_SELECTION_K).
_FAISS_GPU_MAX_K = 2048
_NO_FAISS_WARNED = False


def knn_classify(
    queries: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    *,
    backend: Backend = "auto",
    chunk_size: int = 1024,
) -> Tensor:
    """Predicts classes of queries by a similarity-weighted vote of their k neighbours.

    Features are L2-normalised here (cosine similarity); the caller need not do it.

    Args:
        queries: Query features, (num_queries, dim).
        bank: Labelled bank features, (bank_size, dim), on the device of ``queries``.
        bank_labels: Integer labels of the bank, (bank_size,), in [0, num_classes).
        num_classes: Number of classes.
        k: Number of neighbours. If larger than ``bank_size`` it is clamped to
            ``bank_size`` (with a warning): every bank feature then votes.
        temperature: Vote weights are ``exp(cos_sim / temperature)``.
        backend: ``"faiss"``, ``"torch"`` or ``"auto"`` (faiss if importable, on
            CUDA only if faiss has GPU support; torch otherwise).
        chunk_size: Queries voted at once (and searched at once on the torch and
            faiss GPU paths); bounds memory, not the result.

    Returns:
        Predicted classes ranked by vote, (num_queries, min(5, num_classes)), long,
        on the device of ``queries``; column 0 is the top-1 prediction. Classes
        with equal votes (e.g. no votes) are ranked in an unspecified order.
    """
    k = _validate(queries, bank, bank_labels, num_classes, k, temperature, chunk_size)
    device = queries.device
    resolved = _resolve_backend(backend, device, k)
    queries = F.normalize(queries.detach().float(), dim=1)
    bank = F.normalize(bank.detach().float(), dim=1)
    if resolved == "faiss_cpu":  # also for CUDA tensors with a CPU-only faiss
        queries, bank = queries.cpu(), bank.cpu()
    bank_labels = bank_labels.detach().to(device=bank.device, dtype=torch.long)
    num_top = min(5, num_classes)
    if queries.shape[0] == 0:
        return torch.empty(0, num_top, dtype=torch.long, device=device)
    if resolved == "faiss_cpu":
        # One search over all queries: faiss splits them over its OpenMP threads.
        all_sims, all_indices = _faiss_cpu_search(queries, bank, k)

        def neighbours(start: int) -> tuple[Tensor, Tensor]:
            end = start + chunk_size
            return all_sims[start:end], all_indices[start:end]

    else:
        search = _faiss_gpu_search if resolved == "faiss_gpu" else _torch_search

        def neighbours(start: int) -> tuple[Tensor, Tensor]:
            return search(queries[start : start + chunk_size], bank, k)

    predictions = []
    for start in range(0, queries.shape[0], chunk_size):
        sims, indices = neighbours(start)
        labels = bank_labels[indices.to(bank_labels.device)].to(sims.device)
        predictions.append(_vote(sims, labels, num_classes, temperature, num_top))
    return torch.cat(predictions).to(device)


def _vote(
    sims: Tensor, labels: Tensor, num_classes: int, temperature: float, num_top: int
) -> Tensor:
    """Weighted vote of each query's neighbours.

    Args:
        sims: Cosine similarities to the neighbours, (chunk, k).
        labels: Labels of the neighbours, (chunk, k), long.

    Returns:
        The ``num_top`` classes with the largest summed ``exp(sim / temperature)``,
        (chunk, num_top). Unlike lightly, the row maximum is subtracted before
        ``exp`` (a per-row scale: same ranking, no overflow for small temperatures).
    """
    weights = torch.exp((sims - sims.amax(dim=1, keepdim=True)) / temperature)
    scores = torch.zeros(sims.shape[0], num_classes, device=sims.device)
    scores.scatter_add_(1, labels, weights)
    return scores.topk(num_top, dim=1).indices


def _torch_search(chunk: Tensor, bank: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact top-k by inner product: (chunk, k) similarities and bank indices."""
    return (chunk @ bank.T).topk(k, dim=1, sorted=False)


def _faiss_cpu_search(queries: Tensor, bank: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact top-k by inner product on CPU with faiss: (num_queries, k) each."""
    faiss = _import_faiss()
    assert faiss is not None
    sims, indices = faiss.knn(
        queries.contiguous().numpy(),
        bank.contiguous().numpy(),
        k,
        metric=faiss.METRIC_INNER_PRODUCT,
    )
    return torch.from_numpy(sims), torch.from_numpy(indices)


def _faiss_gpu_search(chunk: Tensor, bank: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact top-k on the GPU with faiss's brute-force inner-product search."""
    faiss = _import_faiss()
    assert faiss is not None
    import faiss.contrib.torch_utils  # noqa: F401  (lets faiss take torch tensors)

    sims, indices = faiss.knn_gpu(
        _gpu_resources(),
        chunk.contiguous(),
        bank.contiguous(),
        k,
        metric=faiss.METRIC_INNER_PRODUCT,
        device=chunk.device.index or 0,
    )
    return sims, indices


@functools.cache
def _gpu_resources():  # pragma: no cover - needs a GPU build of faiss
    faiss = _import_faiss()
    assert faiss is not None
    return faiss.StandardGpuResources()


@functools.cache
def _import_faiss() -> ModuleType | None:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _faiss_has_gpu(faiss: ModuleType) -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _resolve_backend(backend: str, device: torch.device, k: int) -> str:
    """Returns 'faiss_gpu', 'faiss_cpu' or 'torch' for the requested backend."""
    if backend not in BACKENDS:
        raise GraftError(
            f"unknown kNN backend '{backend}'; valid: {format_options(BACKENDS)}."
        )
    if backend == "torch":
        return "torch"
    faiss = _import_faiss()
    if faiss is None:
        if backend == "faiss":
            raise GraftError(
                "backend='faiss' but faiss is not installed; install it with "
                "`pip install lightly-graft[faiss]` or use backend='torch'."
            )
        _warn_no_faiss()
        return "torch"
    if device.type == "cuda":
        if _faiss_has_gpu(faiss) and k <= _FAISS_GPU_MAX_K:
            return "faiss_gpu"
        if _faiss_has_gpu(faiss) and backend == "faiss":
            raise GraftError(
                f"faiss's GPU search supports k <= {_FAISS_GPU_MAX_K}, got k={k}; "
                "use backend='torch' or 'auto' (which then uses torch)."
            )
        # Explicit faiss without GPU support: search on CPU copies.
        return "faiss_cpu" if backend == "faiss" else "torch"
    return "faiss_cpu"


def _warn_no_faiss() -> None:
    global _NO_FAISS_WARNED
    if not _NO_FAISS_WARNED:
        _NO_FAISS_WARNED = True
        warnings.warn(
            "faiss is not installed; kNN uses the torch brute force (same results, "
            "slower, more memory). Install it with `pip install lightly-graft[faiss]`.",
            stacklevel=3,
        )


def _validate(
    queries: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int,
    temperature: float,
    chunk_size: int,
) -> int:
    """Checks the inputs of :func:`knn_classify`; returns k clamped to the bank."""
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise GraftError(
            f"queries {tuple(queries.shape)} and bank {tuple(bank.shape)} must be "
            "(num_queries, dim) and (bank_size, dim) with the same dim."
        )
    if bank_labels.shape != bank.shape[:1]:
        raise GraftError(
            f"bank_labels {tuple(bank_labels.shape)} must be (bank_size,) = "
            f"({bank.shape[0]},): one label per bank feature."
        )
    if bank_labels.is_floating_point() or bank_labels.dtype == torch.bool:
        raise GraftError(f"bank_labels must be integers, got {bank_labels.dtype}.")
    if queries.device != bank.device:
        raise GraftError(
            f"queries are on {queries.device} and bank on {bank.device}: "
            "put both on the same device."
        )
    if num_classes < 1 or bank.shape[0] < 1:
        raise GraftError(
            f"need num_classes >= 1 and a non-empty bank, got num_classes="
            f"{num_classes} and bank_size={bank.shape[0]}."
        )
    low, high = int(bank_labels.min()), int(bank_labels.max())
    if low < 0 or high >= num_classes:
        raise GraftError(
            f"bank_labels span [{low}, {high}] but must lie in [0, {num_classes}) "
            f"for num_classes={num_classes}; pass the right num_classes."
        )
    if k < 1 or temperature <= 0 or chunk_size < 1:
        raise GraftError(
            f"need k >= 1, temperature > 0 and chunk_size >= 1, got k={k}, "
            f"temperature={temperature}, chunk_size={chunk_size}."
        )
    if k > bank.shape[0]:
        warnings.warn(
            f"k={k} is larger than the bank ({bank.shape[0]} features); using "
            f"k={bank.shape[0]}.",
            stacklevel=3,
        )
        k = bank.shape[0]
    return k
