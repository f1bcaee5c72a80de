"""Evaluation protocols of the paper on frozen features: kNN, linear, few-shot."""

from __future__ import annotations

from lightly_graft.eval.features import check_features, extract_features
from lightly_graft.eval.fewshot import (
    fewshot_eval,
    fewshot_subset,
    load_subsets,
    save_subsets,
)
from lightly_graft.eval.knn import knn_eval
from lightly_graft.eval.linear import LinearResult, linear_eval

__all__ = [
    "LinearResult",
    "check_features",
    "extract_features",
    "fewshot_eval",
    "fewshot_subset",
    "knn_eval",
    "linear_eval",
    "load_subsets",
    "save_subsets",
]
