"""Top-1 and top-5 accuracy of ranked class predictions.

One definition for every protocol: the kNN monitor and eval (ranked by the
vote), the linear probe and fine-tuning (ranked by the logits), few-shot logistic
regression (ranked by the probabilities).
"""

from __future__ import annotations

from torch import Tensor

from lightly_graft.errors import GraftError


def top_classes(scores: Tensor, k: int = 5) -> Tensor:
    """The ``min(k, num_classes)`` highest-scoring classes of each row, best first.

    Args:
        scores: (num_queries, num_classes) logits, probabilities or votes.
        k: How many classes to keep.

    Returns:
        (num_queries, min(k, num_classes)) class indices.
    """
    return scores.topk(min(k, scores.shape[1]), dim=1).indices


def top_accuracy(predictions: Tensor, labels: Tensor) -> tuple[float, float]:
    """Top-1 and top-5 accuracy of ranked predictions, as fractions in [0, 1].

    Args:
        predictions: Ranked class predictions, (num_queries, num_top), best
            first: from :func:`~lightly_graft.functional.knn.knn_classify` or
            :func:`top_classes`; columns after the fifth are ignored.
        labels: True labels, (num_queries,).

    Returns:
        ``(top1, top5)``; top5 counts a hit in any of the ``num_top`` columns.
    """
    if predictions.ndim != 2 or labels.shape != predictions.shape[:1]:
        raise GraftError(
            f"predictions {tuple(predictions.shape)} and labels "
            f"{tuple(labels.shape)} do not match: expected (num_queries, num_top) "
            "and (num_queries,)."
        )
    if predictions.shape[0] == 0:
        raise GraftError("cannot compute an accuracy over 0 queries.")
    labels = labels.to(predictions.device).view(-1, 1)
    hits = predictions[:, :5] == labels
    count = hits.shape[0]  # exact fractions on any device (MPS has no float64)
    return int(hits[:, 0].sum()) / count, int(hits.any(dim=1).sum()) / count
