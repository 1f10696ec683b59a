"""Backbone networks mapping input rows to a ``dim``-dimensional representation.

Inputs are always (n, d) float rows, as the protocols give them; the CNN reshapes rows to images
stored in HWC order (MNIST 28x28x1, CIFAR-10 32x32x3 flattened the way ``deepcodes.data`` does).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InputError

BACKBONES = ("mlp", "cnn")
# Image shapes (H, W, C) the CNN infers from the input dimension when none is given.
KNOWN_IMAGE_SHAPES = {784: (28, 28, 1), 3072: (32, 32, 3)}


class MLP(nn.Sequential):
    """Fully connected ReLU network in_dim -> hidden... -> dim (the last layer is linear)."""

    def __init__(self, in_dim: int, dim: int, hidden=(256,)):
        layers, width = [], in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, dim))
        super().__init__(*layers)


class SmallCNN(nn.Module):
    """Two strided convolutions (16 and 32 channels) and a hidden layer: cheap enough to train on
    2 CPU cores in seconds per MNIST epoch. Input rows are images flattened in HWC order."""

    def __init__(self, image_shape: tuple[int, int, int], dim: int, hidden: int = 256):
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        H, W, C = self.image_shape
        self.features = nn.Sequential(
            nn.Conv2d(C, 16, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
        )
        h2, w2 = math.ceil(math.ceil(H / 2) / 2), math.ceil(math.ceil(W / 2) / 2)
        self.head = nn.Sequential(nn.Linear(32 * h2 * w2, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W, C = self.image_shape
        return self.head(self.features(x.reshape(-1, H, W, C).permute(0, 3, 1, 2)))


class L2Normalize(nn.Module):
    """Rows scaled to unit Euclidean norm (a representation on the sphere: its Euclidean ranking
    is the cosine ranking)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(z, dim=1)


def image_shape_for(in_dim: int, image_shape=None) -> tuple[int, int, int]:
    """The (H, W, C) image shape for rows of ``in_dim`` values, checked (InputError if they disagree)."""
    if image_shape is None:
        if in_dim not in KNOWN_IMAGE_SHAPES:
            raise InputError(
                f"the CNN backbone needs images: {in_dim}-dimensional rows match no known image shape "
                f"({', '.join(f'{d} = {s[0]}x{s[1]}x{s[2]}' for d, s in KNOWN_IMAGE_SHAPES.items())}); "
                "pass image_shape=(H, W, C) or use backbone='mlp'")
        return KNOWN_IMAGE_SHAPES[in_dim]
    try:
        shape = tuple(int(s) for s in image_shape)
    except (TypeError, ValueError):
        raise InputError(f"image_shape must be (H, W, C), got {image_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"image_shape must be three positive integers (H, W, C), got {image_shape!r}")
    if shape[0] * shape[1] * shape[2] != in_dim:
        raise InputError(f"images of shape {shape} have {shape[0] * shape[1] * shape[2]} values, "
                         f"but the input rows have {in_dim}")
    return shape


def build_backbone(name: str, in_dim: int, dim: int, *, hidden=(256,), image_shape=None) -> nn.Module:
    """The backbone ``name`` ("mlp" or "cnn") for ``in_dim``-dimensional rows and a ``dim``-d output."""
    if name == "mlp":
        return MLP(in_dim, dim, hidden)
    if name == "cnn":
        width = hidden[-1] if len(hidden) else 256
        return SmallCNN(image_shape_for(in_dim, image_shape), dim, width)
    raise InputError(f"backbone must be one of {BACKBONES}, got {name!r}")
