"""Few-shot evaluation: logistic regression on 1% / 10% of the labels.

The Layer Grafted paper (A.5) evaluates 1% few-shot as DINO does (Caron et al.,
2021): frozen features of the training images without augmentation,
L2-normalised, and an L2-regularised logistic regression trained on the labelled
subset. Its subsets are SimCLR v2's ImageNet split files; here class-balanced
subsets are drawn with a seed and saved as JSON, so that every checkpoint is
evaluated on the same labels. (The paper's 10% number fine-tunes the network
instead; this protocol applies the logistic regression to both fractions, and
``lightly-graft eval --protocol finetune --label-fraction 0.1`` fine-tunes on the
same saved subset.)
The regularisation strength ``C`` is swept over a small grid and the best is
reported with its value, as the linear protocol does with the LR.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from lightly_graft.errors import DataError, GraftError
from lightly_graft.eval.features import check_features, check_validation
from lightly_graft.functional.accuracy import top_accuracy, top_classes

SUBSETS_FORMAT = "lightly_graft.fewshot_subsets"
DEFAULT_FRACTIONS = (0.01, 0.1)
DEFAULT_CS = (0.1, 1.0, 10.0)


def fewshot_subset(
    labels: Tensor | np.ndarray,
    fraction: float,
    seed: int,
    *,
    exclude: Iterable[int] = (),
) -> np.ndarray:
    """Draws a class-balanced labelled subset.

    Every class gets ``max(1, round(fraction * num_candidates / num_classes))``
    samples (all of its samples if it has fewer), drawn without replacement.

    Args:
        labels: Labels of the training set, (num_samples,).
        fraction: Fraction of the labels to keep, in (0, 1].
        seed: Seed of the draw: the same seed gives the same subset.
        exclude: Indices that must not be drawn (e.g. an evaluation split carved
            out of the same dataset).

    Returns:
        Sorted indices into ``labels``, (subset_size,) int64.
    """
    if not 0 < fraction <= 1:
        raise GraftError(f"few-shot fraction must be in (0, 1], got {fraction}.")
    labels = np.asarray(labels).reshape(-1)
    allowed = np.ones(labels.shape[0], dtype=bool)
    allowed[np.fromiter(exclude, dtype=np.int64)] = False
    candidates = np.flatnonzero(allowed)
    if candidates.size == 0:
        raise DataError("no samples left to draw a few-shot subset from.")
    classes = np.unique(labels[candidates])
    per_class = max(1, round(fraction * candidates.size / classes.size))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in classes:
        pool = candidates[labels[candidates] == label]
        chosen.append(rng.choice(pool, size=min(per_class, pool.size), replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def save_subsets(
    path: str | Path, subsets: dict[float, np.ndarray], *, seed: int, num_samples: int
) -> None:
    """Writes subsets as JSON: ``{"format", "seed", "num_samples", "subsets"}``."""
    payload = {
        "format": SUBSETS_FORMAT,
        "version": 1,
        "seed": seed,
        "num_samples": num_samples,
        "subsets": {repr(float(f)): idx.tolist() for f, idx in subsets.items()},
    }
    Path(path).write_text(json.dumps(payload))


def load_subsets(path: str | Path, *, num_samples: int) -> dict[float, np.ndarray]:
    """Reads :func:`save_subsets` output; checks it fits a set of ``num_samples``."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read few-shot subsets from {path}: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != SUBSETS_FORMAT:
        raise DataError(
            f"{path} is not a lightly-graft few-shot subsets file (no "
            f"'format': '{SUBSETS_FORMAT}'); delete it or pass another path."
        )
    if payload["num_samples"] != num_samples:
        raise DataError(
            f"few-shot subsets in {path} were drawn from {payload['num_samples']} "
            f"samples but the training set has {num_samples}: delete the file to "
            "draw new subsets."
        )
    return {
        float(f): np.asarray(idx, dtype=np.int64)
        for f, idx in payload["subsets"].items()
    }


def fewshot_eval(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    subsets_path: str | Path | None = None,
    cs: Sequence[float] = DEFAULT_CS,
    max_iter: int = 1000,
    val_features: Tensor | None = None,
    val_labels: Tensor | None = None,
) -> dict[str, dict]:
    """Logistic regression on labelled subsets of L2-normalised frozen features.

    Args:
        train_features: (num_train, dim) features of un-augmented train images.
        train_labels: (num_train,) labels.
        test_features: (num_test, dim) features of the evaluation split.
        test_labels: (num_test,) labels.
        num_classes: Number of classes.
        fractions: Label fractions (paper: 1% and 10%).
        seed: Seed of the subset draw.
        subsets_path: JSON file of the subsets: read if it exists (and holds every
            fraction), else drawn and written there.
        cs: Grid of inverse L2 regularisation strengths of the logistic regression.
        max_iter: Iterations of scikit-learn's lbfgs solver.
        val_features: (num_val, dim) features of a validation split held out of
            the training set (not among ``train_features``). When given, ``C`` is
            chosen by the validation top-1 and the test accuracy at that ``C`` is
            reported (``per_c`` also holds each ``val_top1``); without it, the
            best ``C`` on the test set is reported.
        val_labels: (num_val,) labels of ``val_features``.

    Returns:
        Per fraction (keyed ``"1%"``, ``"10%"``, ...): ``top1``, ``top5``
        (fractions in [0, 1]), ``best_c``, ``per_c`` and ``num_labelled``.
    """
    check_features(
        train_features, train_labels, test_features, test_labels, num_classes
    )
    if not cs or min(cs) <= 0:
        raise GraftError(f"need a non-empty grid of positive C values, got {list(cs)}.")
    validate = check_validation(val_features, val_labels, train_features, num_classes)
    subsets = labelled_subsets(train_labels, fractions, seed, subsets_path)
    train_x = F.normalize(train_features.float(), dim=1).cpu().numpy()
    test_x = F.normalize(test_features.float(), dim=1).cpu().numpy()
    train_y, test_y = train_labels.cpu().numpy(), test_labels.cpu().numpy()
    results = {}
    for fraction in fractions:
        idx = subsets[float(fraction)]
        per_c = {}
        for c in cs:
            model = _fit(train_x[idx], train_y[idx], c, max_iter)
            per_c[c] = _score(model, test_x, test_y)
            if validate:
                val_x = F.normalize(val_features.float(), dim=1).cpu().numpy()  # type: ignore[union-attr]
                val_y = val_labels.cpu().numpy()  # type: ignore[union-attr]
                per_c[c]["val_top1"] = _score(model, val_x, val_y)["top1"]
        key = "val_top1" if validate else "top1"
        best_c = max(per_c, key=lambda c: per_c[c][key])
        results[f"{fraction * 100:g}%"] = {
            **per_c[best_c],
            "best_c": best_c,
            "per_c": {str(c): acc for c, acc in per_c.items()},
            "num_labelled": int(idx.size),
        }
    return results


def labelled_subsets(
    labels: Tensor | np.ndarray,
    fractions: Sequence[float],
    seed: int,
    path: str | Path | None,
) -> dict[float, np.ndarray]:
    """Class-balanced subsets per fraction, read from ``path`` if it exists (it
    must hold every fraction), else drawn with :func:`fewshot_subset` and written
    there: every protocol and checkpoint that shares the file shares the labels.

    Args:
        labels: Labels of the training set, (num_samples,).
        fractions: Label fractions, each in (0, 1].
        seed: Seed of the draw.
        path: Subsets JSON file, or None to draw without saving.

    Returns:
        ``{fraction: sorted indices into labels}``.
    """
    labels_np = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
    num_samples = labels_np.shape[0]
    if path is not None and Path(path).exists():
        subsets = load_subsets(path, num_samples=num_samples)
        missing = [f for f in fractions if float(f) not in subsets]
        if not missing:
            return subsets
        raise DataError(
            f"few-shot subsets in {path} lack the fractions {missing}: delete the "
            "file or pass another subsets path."
        )
    subsets = {float(f): fewshot_subset(labels_np, f, seed) for f in fractions}
    if path is not None:
        save_subsets(path, subsets, seed=seed, num_samples=num_samples)
    return subsets


def _fit(
    train_x: np.ndarray, train_y: np.ndarray, c: float, max_iter: int
) -> LogisticRegression:
    model = LogisticRegression(C=c, max_iter=max_iter)
    return model.fit(train_x, train_y)


def _score(
    model: LogisticRegression, test_x: np.ndarray, test_y: np.ndarray
) -> dict[str, float]:
    probabilities = torch.from_numpy(model.predict_proba(test_x))
    top = torch.from_numpy(model.classes_)[top_classes(probabilities)]
    top1, top5 = top_accuracy(top, torch.from_numpy(test_y))
    return {"top1": top1, "top5": top5}
