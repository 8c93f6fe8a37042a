"""Shared-weight tower: both sides of a pair go through the same network."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from training.config import ModelConfig


class Tower(nn.Module):
    """input dropout -> [Linear, BatchNorm, ReLU, Dropout]* -> Linear -> L2 normalise.

    High-cardinality columns (region) enter through learned embeddings (index 0 = OOV)
    concatenated to the dense features before the input dropout.
    """

    def __init__(self, dense_dim: int, cardinalities: list[int], config: ModelConfig) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(size, config.high_cardinality_dim) for size in cardinalities)
        width = dense_dim + config.high_cardinality_dim * len(cardinalities)
        if width == 0:
            raise ValueError("the tower needs at least one input feature")
        self.input_dropout = nn.Dropout(config.input_dropout)
        blocks: list[nn.Module] = []
        for hidden in config.hidden:
            blocks += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(config.dropout)]
            width = hidden
        self.blocks = nn.Sequential(*blocks)
        self.output = nn.Linear(width, config.embedding_dim)

    def forward(self, dense: torch.Tensor, categorical_index: torch.Tensor) -> torch.Tensor:
        parts = [dense] + [emb(categorical_index[:, i]) for i, emb in enumerate(self.embeddings)]
        x = self.input_dropout(torch.cat(parts, dim=1))
        return F.normalize(self.output(self.blocks(x)), dim=1)


class TwoTowerModel(nn.Module):
    """The tower plus an optional multi-label segment head used only as a training signal."""

    def __init__(self, dense_dim: int, cardinalities: list[int], n_segments: int, config: ModelConfig) -> None:
        super().__init__()
        self.tower = Tower(dense_dim, cardinalities, config)
        self.segment_head = nn.Linear(config.embedding_dim, max(n_segments, 1))

    def forward(self, dense: torch.Tensor, categorical_index: torch.Tensor) -> torch.Tensor:
        return self.tower(dense, categorical_index)


@torch.no_grad()
def embed_arrays(tower: Tower, dense: np.ndarray, categorical_index: np.ndarray, batch_size: int = 16384) -> np.ndarray:
    """Embeddings (n, dim) float32 of preprocessed features, in batches, on the tower's device."""
    was_training = tower.training
    tower.eval()
    device = tower.output.weight.device
    out = np.empty((dense.shape[0], tower.output.out_features), dtype=np.float32)
    for start in range(0, dense.shape[0], batch_size):
        stop = start + batch_size
        out[start:stop] = tower(
            torch.from_numpy(np.ascontiguousarray(dense[start:stop])).to(device, non_blocking=True),
            torch.from_numpy(np.ascontiguousarray(categorical_index[start:stop])).to(device, non_blocking=True),
        ).cpu().numpy()
    tower.train(was_training)
    return out
