"""Concentration of a set of unit vectors under a von Mises-Fisher model.

Masked MoCo (papers/masked_moco_improved_baseline.md, §3.4) monitors training
stability by treating the n chunk representations of one image as samples of a
von Mises-Fisher distribution and estimating its concentration kappa with the
approximation of Banerjee et al., "Clustering on the unit hypersphere using von
Mises-Fisher distributions", JMLR 2005, Eq. 4.4:

    kappa ~= r_bar * (d - r_bar^2) / (1 - r_bar^2),

with r_bar = ||mean of the unit vectors||_2 the mean resultant length and d the
dimension. Neither lightly nor timm estimates vMF parameters, hence this file.

Caveat (documented, not corrected, to match the paper): with few samples per image
(n=8 chunks) r_bar is biased upwards (E[r_bar^2] ~ 1/n for uniform directions), so
the estimate is large even for weakly concentrated sets. It is meant as a signal to
watch over training, not as an unbiased estimate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def mean_resultant_length(vectors: Tensor, eps: float = 1e-12) -> Tensor:
    """r_bar: the norm of the mean of the normalised vectors.

    Args:
        vectors: (..., num_samples, dim), normalised to unit length here.

    Returns:
        (...) in [0, 1].
    """
    return F.normalize(vectors, dim=-1, eps=eps).mean(dim=-2).norm(dim=-1)


def vmf_concentration(vectors: Tensor, eps: float = 1e-6) -> Tensor:
    """vMF concentration kappa of each set of vectors (Banerjee et al. 2005).

    Args:
        vectors: (..., num_samples, dim), e.g. (batch_size, num_chunks, dim): the
            n chunk representations of each image. Normalised to unit length here.
        eps: Lower bound on 1 - r_bar^2, so identical samples give a large finite
            kappa instead of inf.

    Returns:
        (...), e.g. (batch_size,): kappa per set, computed in float32 or higher.
    """
    assert vectors.shape[-2] >= 2, "kappa needs at least 2 samples per set"
    dim = vectors.shape[-1]
    r = mean_resultant_length(
        vectors.to(torch.promote_types(vectors.dtype, torch.float32))
    )
    r2 = r.square()
    return r * (dim - r2) / (1.0 - r2).clamp_min(eps)
