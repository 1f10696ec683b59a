"""DNNH: simultaneous feature learning and hash coding (Lai, Pan, Liu, Yan, CVPR 2015; ALGORITHMS.md
section 4).

The backbone's features are cut by the divide-and-encode layer into L slices, each mapped to one
unit by its own linear map and a sigmoid, so f(x) ∈ (0, 1)^L and every bit sees its own part of the
features. Training uses the triplet ranking loss on every valid (query, similar, dissimilar)
triplet of each mini-batch, max(0, 1 − (‖f(x) − f(x⁻)‖² − ‖f(x) − f(x⁺)‖²)); bit = 1 where f >= ½.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .. import persist
from ..validation import check_int, check_n_bits
from .base import BinaryCoder
from .network import NETWORK_DOC, SUPERVISED_DOC, NetworkCoder, check_number


class DivideAndEncode(nn.Module):
    """(B, L·w) features -> (B, L) in (0, 1): slice l (features l·w .. l·w + w − 1) goes through its
    own linear map to one unit, then a sigmoid."""

    def __init__(self, n_bits: int, width: int):
        super().__init__()
        self.n_bits, self.width = int(n_bits), int(width)
        self.weight = nn.Parameter(torch.empty(self.n_bits, self.width))
        self.bias = nn.Parameter(torch.empty(self.n_bits))

    @torch.no_grad()
    def reset_from(self, generator: torch.Generator) -> None:
        """torch's Linear initialisation of each slice's map (fan-in = w), drawn from ``generator``."""
        bound = 1 / math.sqrt(self.width)
        self.weight.uniform_(-bound, bound, generator=generator)
        self.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        slices = h.reshape(h.shape[0], self.n_bits, self.width)
        return torch.sigmoid((slices * self.weight).sum(dim=-1) + self.bias)


@persist.register
class DNNH(NetworkCoder, BinaryCoder):
    __doc__ = """DNNH: a backbone with ``n_bits · slice_width`` outputs, a ReLU, and the divide-and-encode
    layer (one sigmoid unit per slice), trained on the triplet ranking loss over every valid triplet
    of each mini-batch (module docstring); bit = 1 where the unit's output is >= ½.

    Parameters
    ----------
    n_bits : code length L, a multiple of 8.
    slice_width : features per bit fed to the divide-and-encode layer.
    margin : margin of the triplet loss (the paper's 1).""" + NETWORK_DOC + SUPERVISED_DOC

    _learned = ("network_",)
    supervised = True

    def __init__(self, n_bits: int = 32, slice_width: int = 8, margin: float = 1.0, backbone: str = "mlp",
                 hidden=(512, 512), image_shape=None, epochs: int = 20, batch_size: int = 128, lr: float = 1e-3,
                 weight_decay: float = 0.0, lr_schedule: str = "cosine", augment: bool = False,
                 validation_size=None, validation_database: int = 10000, patience: int | None = None,
                 random_state=None, device="cpu", verbose: bool = False):
        self._keep(locals())

    def _build_network(self, in_dim: int) -> nn.Module:
        width = int(self.slice_width)
        return nn.Sequential(self._backbone(in_dim, int(self.n_bits) * width), nn.ReLU(),
                             DivideAndEncode(int(self.n_bits), width))

    def fit(self, X, y=None) -> "DNNH":
        """Train on rows ``X`` (n, d) with class labels ``y`` (n,). Returns self."""
        from ..nn import TripletLoss

        n_bits = check_n_bits(self.n_bits)
        check_int(self.slice_width, "slice_width", low=1)
        margin = check_number(self.margin, "margin", positive=True)
        return self._fit_coder(X, y, lambda n_classes: TripletLoss(margin, squared=True),
                               lambda split: split.score_binary(self.encode, n_bits))

    def project(self, X) -> np.ndarray:
        """f(x) − ½ (n, n_bits) float32 (f the sigmoid units); bit = 1 where it is >= 0."""
        return self._outputs(X) - np.float32(0.5)
