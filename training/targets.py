"""Pair similarity targets computed on batches of business vectors (segment memberships).

A target function takes two float tensors ``a``, ``b`` of shape ``(batch, n_segments)``
with 0/1 entries and returns ``(batch,)`` similarities in ``[0, 1]``. Any other business
vector (purchases, product affinities: the Walmart setting) can replace segments by
registering another function; the model never sees the labels directly.

Customers with no segment are kept in pair sampling. Their similarity is defined as
**0 against anyone with a segment and 1 against another customer with no segment** (two
identical, empty profiles), for every built-in target. This keeps the target total and
lets "has nothing in common with the segmented base" be learned.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lookalike.errors import ConfigError

TargetFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
TARGETS: dict[str, TargetFn] = {}


def register_target(name: str) -> Callable[[TargetFn], TargetFn]:
    def decorator(fn: TargetFn) -> TargetFn:
        TARGETS[name] = fn
        return fn

    return decorator


def get_target(name: str) -> TargetFn:
    try:
        return TARGETS[name]
    except KeyError:
        raise ConfigError(f"unknown pair target {name!r}; registered: {sorted(TARGETS)}") from None


def _both_empty(size_a: torch.Tensor, size_b: torch.Tensor) -> torch.Tensor:
    return (size_a == 0) & (size_b == 0)


@register_target("cosine")
def cosine_target(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of the vectors (binary or real-valued, e.g. segment-weighted labels)."""
    inter = (a * b).sum(dim=1)
    size_a, size_b = (a * a).sum(dim=1), (b * b).sum(dim=1)
    denom = torch.sqrt(size_a * size_b)
    sim = torch.where(denom > 0, inter / denom.clamp_min(1e-12), torch.zeros_like(inter))
    return torch.where(_both_empty(size_a, size_b), torch.ones_like(sim), sim)


@register_target("jaccard")
def jaccard_target(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter = (a * b).sum(dim=1)
    size_a, size_b = a.sum(dim=1), b.sum(dim=1)
    union = size_a + size_b - inter
    sim = torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))
    return torch.where(_both_empty(size_a, size_b), torch.ones_like(sim), sim)


@register_target("hamming")
def hamming_target(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - normalised Hamming distance. Dominated by shared absences on sparse labels."""
    if a.shape[1] == 0:
        return torch.ones(a.shape[0], dtype=a.dtype)
    return 1.0 - (a != b).to(a.dtype).mean(dim=1)
