"""Similarity losses on a batch of representations ``z`` (B, d) with class labels ``y`` (B,).

Each is a module ``loss(z, y) -> scalar``; the classification loss owns a linear softmax head.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError

LOSSES = ("classification", "contrastive", "triplet")


def _pair_distances(z: torch.Tensor, squared: bool = False) -> torch.Tensor:
    # Explicit differences rather than cdist: cdist's gradient is NaN on the zero diagonal.
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    return d2 if squared else torch.sqrt(d2 + 1e-12)


class ClassificationLoss(nn.Module):
    """Softmax cross-entropy of a linear classifier on the representation; with ``cosine_scale`` s,
    of a cosine classifier instead (logits s·cos(z, w_c), the normalised softmax of NormFace),
    which suits representations on the unit sphere."""

    def __init__(self, dim: int, n_classes: int, cosine_scale: float | None = None):
        super().__init__()
        self.head = nn.Linear(dim, n_classes, bias=cosine_scale is None)
        self.cosine_scale = None if cosine_scale is None else float(cosine_scale)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.cosine_scale is None:
            return nn.functional.cross_entropy(self.head(z), y)
        logits = nn.functional.normalize(z, dim=1) @ nn.functional.normalize(self.head.weight, dim=1).T
        return nn.functional.cross_entropy(self.cosine_scale * logits, y)


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
    """Triplet loss max(0, d(a, p) - d(a, n) + margin), averaged over every valid triplet of the
    batch (batch-all mining); ``squared`` uses squared Euclidean distances (DNNH's form)."""

    def __init__(self, margin: float = 1.0, squared: bool = False):
        super().__init__()
        self.margin = float(margin)
        self.squared = bool(squared)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = _pair_distances(z, self.squared)
        same = y[:, None] == y[None, :]
        pos = same & ~torch.eye(len(y), dtype=torch.bool, device=z.device)
        valid = pos[:, :, None] & ~same[:, None, :]
        if not valid.any():
            return z.sum() * 0.0
        per_triplet = nn.functional.relu(d[:, :, None] - d[:, None, :] + self.margin)
        return per_triplet[valid].mean()


def build_loss(name: str, dim: int, n_classes: int, margin: float = 1.0,
               cosine_scale: float | None = None) -> nn.Module:
    """The similarity loss ``name`` for ``dim``-d representations of ``n_classes`` classes
    (``cosine_scale``: the classification loss's cosine classifier, see ClassificationLoss)."""
    if name == "classification":
        return ClassificationLoss(dim, n_classes, cosine_scale)
    if name == "contrastive":
        return ContrastiveLoss(margin)
    if name == "triplet":
        return TripletLoss(margin)
    raise InputError(f"loss must be one of {LOSSES}, got {name!r}")
