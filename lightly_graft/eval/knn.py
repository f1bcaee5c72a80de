"""kNN evaluation protocol on frozen features (InstDisc weighted vote)."""

from __future__ import annotations

from torch import Tensor

from lightly_graft.functional.accuracy import top_accuracy
from lightly_graft.functional.knn import Backend, knn_classify


def knn_eval(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    *,
    k: int = 200,
    temperature: float = 0.1,
    backend: Backend = "auto",
) -> dict[str, float]:
    """Weighted kNN accuracy of test features against a labelled train bank.

    Args:
        train_features: Bank features, (num_train, dim).
        train_labels: Bank labels, (num_train,).
        test_features: Query features, (num_test, dim).
        test_labels: Query labels, (num_test,).
        num_classes: Number of classes.
        k: Neighbours (InstDisc / lightly default 200).
        temperature: Vote temperature (default 0.1).
        backend: See :func:`lightly_graft.functional.knn.knn_classify`.

    Returns:
        ``{"top1": ..., "top5": ..., "k": k, "temperature": temperature}``,
        accuracies as fractions in [0, 1].
    """
    predictions = knn_classify(
        test_features,
        train_features,
        train_labels,
        num_classes,
        k=k,
        temperature=temperature,
        backend=backend,
    )
    top1, top5 = top_accuracy(predictions, test_labels)
    return {"top1": top1, "top5": top5, "k": k, "temperature": temperature}
