"""Tests of knn_classify: backends agree with each other and with lightly."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from lightly.utils.benchmarking.knn import knn_predict

from lightly_graft.errors import GraftError
from lightly_graft.functional import knn
from lightly_graft.functional.accuracy import top_accuracy
from lightly_graft.functional.knn import knn_classify


def _clustered(num_bank=2000, num_queries=300, dim=32, num_classes=10, seed=0):
    """Class centroids plus noise: neighbours are informative but not trivial."""
    generator = torch.Generator().manual_seed(seed)
    centroids = torch.randn(num_classes, dim, generator=generator)
    bank_labels = torch.randint(0, num_classes, (num_bank,), generator=generator)
    query_labels = torch.randint(0, num_classes, (num_queries,), generator=generator)
    bank = centroids[bank_labels] + 1.5 * torch.randn(
        num_bank, dim, generator=generator
    )
    queries = centroids[query_labels] + 1.5 * torch.randn(
        num_queries, dim, generator=generator
    )
    return queries, bank, bank_labels, query_labels


def _lightly(queries, bank, bank_labels, num_classes, k, temperature):
    """lightly's knn_predict on normalised features (as its docstring advises)."""
    return knn_predict(
        F.normalize(queries, dim=1),
        F.normalize(bank, dim=1).T,
        bank_labels,
        num_classes,
        knn_k=k,
        knn_t=temperature,
    )


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_knn_classify__agrees_with_lightly(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    queries, bank, bank_labels, _ = _clustered()
    ours = knn_classify(queries, bank, bank_labels, 10, k=50, backend=backend)
    reference = _lightly(queries, bank, bank_labels, 10, 50, 0.1)
    assert ours.shape == (300, 5) and ours.dtype == torch.long
    torch.testing.assert_close(ours[:, 0], reference[:, 0], rtol=0, atol=0)
    # Ranks 2-5 agree among the classes that got votes (classes without votes
    # tie at 0 and are ranked arbitrarily by both).
    neighbours = (F.normalize(queries, dim=1) @ F.normalize(bank, dim=1).T).topk(50)
    voted = F.one_hot(bank_labels[neighbours.indices], 10).amax(dim=1).sum(dim=1)
    ranked = torch.arange(5) < voted.unsqueeze(1)  # (300, 5): rank has a vote
    assert (ours == reference[:, :5])[ranked].float().mean() > 0.99


def test_knn_classify__faiss_and_torch_agree_on_every_query():
    pytest.importorskip("faiss")
    queries, bank, bank_labels, _ = _clustered(num_bank=5000, num_queries=1000, seed=1)
    by_faiss = knn_classify(queries, bank, bank_labels, 10, backend="faiss")
    by_torch = knn_classify(queries, bank, bank_labels, 10, backend="torch")
    torch.testing.assert_close(by_faiss[:, 0], by_torch[:, 0], rtol=0, atol=0)


def test_knn_classify__faiss_cpu_at_monitor_settings_same_top1_as_lightly():
    """k=200, T=0.1, 100 classes: the knn_bench setting, scaled down."""
    pytest.importorskip("faiss")
    queries, bank, bank_labels, _ = _clustered(
        num_bank=8000, num_queries=2000, dim=48, num_classes=100, seed=2
    )
    by_faiss = knn_classify(queries, bank, bank_labels, 100, backend="faiss")
    reference = _lightly(queries, bank, bank_labels, 100, 200, 0.1)
    torch.testing.assert_close(by_faiss[:, 0], reference[:, 0], rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("chunk_size", [4, 7, 300])
def test_knn_classify__chunked_equals_unchunked(backend, chunk_size):
    if backend == "faiss":
        pytest.importorskip("faiss")
    queries, bank, bank_labels, _ = _clustered(num_queries=30)
    whole = knn_classify(
        queries, bank, bank_labels, 10, k=20, backend=backend, chunk_size=10_000
    )
    chunked = knn_classify(
        queries, bank, bank_labels, 10, k=20, backend=backend, chunk_size=chunk_size
    )
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_knn_classify__handcrafted(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    # cos sims to the query (1, 0): 1.0 (class 0), 0.0 (class 1), 0.8 (class 1),
    # -1.0 (class 2).
    bank = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.8, 0.6], [-3.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    query = torch.tensor([[5.0, 0.0]])

    def top1(k, temperature):
        pred = knn_classify(query, bank, labels, 3, k, temperature, backend=backend)
        assert pred.shape == (1, 3)  # min(5, num_classes) columns
        return pred[0].tolist()

    # k=2: class 0 gets e^1 = 2.72, class 1 e^0.8 = 2.23.
    assert top1(2, 1.0)[0] == 0
    # k=3: class 1 gets e^0.8 + e^0 = 3.23 > e^1: the weighted majority flips.
    assert top1(3, 1.0)[:2] == [1, 0]
    # A low temperature favours the nearest neighbour: e^10 > e^8 + e^0.
    assert top1(3, 0.1)[0] == 0
    # k=4 with T=1: class 2's single far vote e^-1 ranks last.
    assert top1(4, 1.0) == [1, 0, 2]


def test_knn_classify__small_temperature_does_not_overflow():
    queries, bank, bank_labels, _ = _clustered(num_queries=20)
    queries = F.normalize(queries, dim=1)
    bank = F.normalize(bank, dim=1)
    # exp(sim / 0.005) overflows float32; the reference votes in log space (float64).
    pred = knn_classify(queries, bank, bank_labels, 10, k=30, temperature=0.005)
    sims, idx = (queries.double() @ bank.double().T).topk(30, dim=1)
    log_votes = torch.full((20, 10), -math.inf, dtype=torch.float64)
    for c in range(10):
        masked = torch.where(bank_labels[idx] == c, sims / 0.005, -math.inf)
        log_votes[:, c] = torch.logsumexp(masked, dim=1)
    torch.testing.assert_close(pred[:, 0], log_votes.argmax(dim=1), rtol=0, atol=0)


def test_knn_classify__k_larger_than_bank_is_clamped():
    queries, bank, bank_labels, _ = _clustered(num_bank=30, num_queries=5)
    with pytest.warns(UserWarning, match="k=100 is larger than the bank"):
        clamped = knn_classify(queries, bank, bank_labels, 10, k=100, backend="torch")
    torch.testing.assert_close(
        clamped, knn_classify(queries, bank, bank_labels, 10, k=30, backend="torch")
    )


def test_knn_classify__without_faiss_falls_back_to_torch_once(monkeypatch):
    monkeypatch.setattr(knn, "_import_faiss", lambda: None)
    monkeypatch.setattr(knn, "_NO_FAISS_WARNED", False)
    queries, bank, bank_labels, _ = _clustered(num_queries=20)
    with pytest.warns(UserWarning, match="faiss is not installed"):
        auto = knn_classify(queries, bank, bank_labels, 10, k=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        knn_classify(queries, bank, bank_labels, 10, k=10)  # warns only once
    reference = knn_classify(queries, bank, bank_labels, 10, k=10, backend="torch")
    torch.testing.assert_close(auto, reference)
    with pytest.raises(GraftError, match="faiss is not installed"):
        knn_classify(queries, bank, bank_labels, 10, backend="faiss")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"queries": torch.randn(4, 3)}, "same dim"),
        ({"bank_labels": torch.zeros(7, dtype=torch.long)}, "one label per bank"),
        ({"bank_labels": torch.zeros(8)}, "must be integers"),
        ({"bank_labels": torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])}, r"\[0, 4\]"),
        ({"bank_labels": -torch.ones(8, dtype=torch.long)}, r"\[-1, -1\]"),
        ({"temperature": 0.0}, "temperature > 0"),
        ({"k": 0}, "k >= 1"),
        ({"backend": "fais"}, "unknown kNN backend 'fais'"),
    ],
)
def test_knn_classify__invalid_input(change, match):
    args = {
        "queries": torch.randn(4, 2),
        "bank": torch.randn(8, 2),
        "bank_labels": torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]),
        "num_classes": 4,
        "k": 3,
        "temperature": 0.1,
        "backend": "torch",
    }
    args.update(change)
    with pytest.raises(GraftError, match=match):
        knn_classify(**args)


def test_knn_classify__empty_queries():
    pred = knn_classify(
        torch.empty(0, 2), torch.randn(8, 2), torch.zeros(8, dtype=torch.long), 3, k=4
    )
    assert pred.shape == (0, 3)


def test_top_accuracy__handcrafted():
    predictions = torch.tensor([[0, 1, 2], [2, 0, 1], [1, 2, 0], [0, 2, 1]])
    labels = torch.tensor([0, 0, 2, 1])
    top1, top5 = top_accuracy(predictions, labels)
    assert top1 == 0.25  # only the first query
    assert top5 == 1.0  # every label is among the 3 columns
    with pytest.raises(GraftError, match="do not match"):
        top_accuracy(predictions, labels[:3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_knn_classify__cuda_matches_cpu():
    queries, bank, bank_labels, _ = _clustered()
    on_cpu = knn_classify(queries, bank, bank_labels, 10, backend="torch")
    on_gpu = knn_classify(queries.cuda(), bank.cuda(), bank_labels.cuda(), 10)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu[:, 0].cpu(), on_cpu[:, 0], rtol=0, atol=0)


class _FakeFaiss:
    """Stands in for a faiss module, with or without GPU support."""

    def __init__(self, gpus: int) -> None:
        self.gpus = gpus
        if gpus:
            self.StandardGpuResources = object

    def get_num_gpus(self) -> int:
        return self.gpus


@pytest.mark.parametrize(
    ("backend", "device", "gpus", "k", "expected"),
    [
        ("auto", "cpu", 0, 200, "faiss_cpu"),
        ("auto", "cpu", 1, 200, "faiss_cpu"),
        ("auto", "cuda", 1, 200, "faiss_gpu"),
        ("auto", "cuda", 1, 4096, "torch"),  # beyond faiss's GPU k limit
        ("auto", "cuda", 0, 200, "torch"),  # CPU-only faiss: torch on the GPU
        ("faiss", "cuda", 0, 200, "faiss_cpu"),  # explicit: faiss on CPU copies
        ("torch", "cuda", 1, 200, "torch"),
    ],
)
def test_resolve_backend(backend, device, gpus, k, expected, monkeypatch):
    monkeypatch.setattr(knn, "_import_faiss", lambda: _FakeFaiss(gpus))
    assert knn._resolve_backend(backend, torch.device(device), k) == expected


def test_resolve_backend__explicit_faiss_gpu_rejects_large_k(monkeypatch):
    monkeypatch.setattr(knn, "_import_faiss", lambda: _FakeFaiss(1))
    with pytest.raises(GraftError, match="k <= 2048, got k=4096"):
        knn._resolve_backend("faiss", torch.device("cuda"), 4096)
