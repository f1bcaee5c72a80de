"""Analysis tools: gradient conflict (Fig. 1), VIC (Fig. 6), attention distance
(Fig. 7) and t-SNE (Fig. 3) of Layer Grafted Pre-training, with CSV and PNG output."""

from lightly_graft.analysis.attention_distance import (
    measure_attention_distance,
    write_attention_distance,
)
from lightly_graft.analysis.gradient_conflict import (
    GradientConflict,
    measure_gradient_conflict,
    write_gradient_conflict,
)
from lightly_graft.analysis.tsne import TSNEResult, embed, tsne, write_tsne
from lightly_graft.analysis.vic import measure_vic, write_vic

__all__ = [
    "GradientConflict",
    "TSNEResult",
    "embed",
    "measure_attention_distance",
    "measure_gradient_conflict",
    "measure_vic",
    "tsne",
    "write_attention_distance",
    "write_gradient_conflict",
    "write_tsne",
    "write_vic",
]
