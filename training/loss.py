"""Training objective, kept apart from the model so the recipe can change without it.

Main term (the published recipe): L1 between cosine(e_a, e_b) and the pair target.
Optional auxiliary term: multi-label BCE of a linear segment head on the embeddings of the
customers in the batch, weighted by ``aux_weight`` (0 disables it). It makes segment
membership linearly readable from the embedding, which is what kNN assignment relies on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


def predicted_similarity(emb_a: torch.Tensor, emb_b: torch.Tensor) -> torch.Tensor:
    """Cosine of L2-normalised embeddings."""
    return (emb_a * emb_b).sum(dim=1)


def similarity_l1(emb_a: torch.Tensor, emb_b: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    prediction = predicted_similarity(emb_a, emb_b)
    return F.l1_loss(prediction, target), prediction


@dataclass
class LossParts:
    total: torch.Tensor
    similarity: torch.Tensor
    auxiliary: torch.Tensor
    prediction: torch.Tensor


class PairObjective:
    def __init__(self, aux_weight: float = 0.0, pos_weight: torch.Tensor | None = None) -> None:
        self.aux_weight = aux_weight
        self.pos_weight = pos_weight

    def __call__(
        self, emb_a: torch.Tensor, emb_b: torch.Tensor, target: torch.Tensor,
        segment_logits: torch.Tensor | None = None, segment_labels: torch.Tensor | None = None,
    ) -> LossParts:
        similarity, prediction = similarity_l1(emb_a, emb_b, target)
        auxiliary = torch.zeros((), dtype=similarity.dtype)
        if self.aux_weight > 0 and segment_logits is not None and segment_labels is not None:
            auxiliary = F.binary_cross_entropy_with_logits(segment_logits, segment_labels, pos_weight=self.pos_weight)
        return LossParts(similarity + self.aux_weight * auxiliary, similarity, auxiliary, prediction)
