"""Similarity losses on a batch of representations ``z`` (B, d) with class labels ``y`` (B,).

Each is a module ``loss(z, y) -> scalar``; the classification loss owns a linear softmax head.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError

LOSSES = ("classification", "contrastive", "triplet")


def _pair_distances(z: torch.Tensor) -> torch.Tensor:
    # Explicit differences rather than cdist: cdist's gradient is NaN on the zero diagonal.
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    return torch.sqrt(d2 + 1e-12)


class ClassificationLoss(nn.Module):
    """Softmax cross-entropy of a linear classifier on the representation."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.head = nn.Linear(dim, n_classes)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(self.head(z), y)


class ContrastiveLoss(nn.Module):
    """Pairwise contrastive loss over all pairs of the batch (Hadsell et al., 2006): same-class pairs
    pay d², different-class pairs pay max(0, margin - d)²."""

    def __init__(self, margin: float = 1.0):
        super().__init__()
        self.margin = float(margin)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = _pair_distances(z)
        same = y[:, None] == y[None, :]
        off = ~torch.eye(len(y), dtype=torch.bool, device=z.device)
        per_pair = torch.where(same, d ** 2, nn.functional.relu(self.margin - d) ** 2)
        return per_pair[off].mean()


class TripletLoss(nn.Module):
    """Triplet loss max(0, d(a, p) - d(a, n) + margin), averaged over every valid triplet of the batch."""

    def __init__(self, margin: float = 1.0):
        super().__init__()
        self.margin = float(margin)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = _pair_distances(z)
        same = y[:, None] == y[None, :]
        pos = same & ~torch.eye(len(y), dtype=torch.bool, device=z.device)
        valid = pos[:, :, None] & ~same[:, None, :]
        if not valid.any():
            return z.sum() * 0.0
        per_triplet = nn.functional.relu(d[:, :, None] - d[:, None, :] + self.margin)
        return per_triplet[valid].mean()


def build_loss(name: str, dim: int, n_classes: int, margin: float = 1.0) -> nn.Module:
    """The similarity loss ``name`` for ``dim``-d representations of ``n_classes`` classes."""
    if name == "classification":
        return ClassificationLoss(dim, n_classes)
    if name == "contrastive":
        return ContrastiveLoss(margin)
    if name == "triplet":
        return TripletLoss(margin)
    raise InputError(f"loss must be one of {LOSSES}, got {name!r}")
