"""DSH: Deep Supervised Hashing (Liu, Wang, Shan, Chen, CVPR 2016; ALGORITHMS.md section 4).

A network with ``n_bits`` real-valued outputs b, trained on every pair (i, j) of each mini-batch
with s = 1 for a pair of the same class and 0 otherwise:

    L = ½·s·‖b_i − b_j‖² + ½·(1 − s)·max(m − ‖b_i − b_j‖², 0) + α·(‖|b_i| − 1‖₁ + ‖|b_j| − 1‖₁)

(margin m = 2L, α = 0.01 in the paper); the bits are the signs of b.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import persist
from ..validation import check_n_bits
from .base import BinaryCoder
from .network import NETWORK_DOC, SUPERVISED_DOC, NetworkCoder, check_number


class DSHLoss(nn.Module):
    """The DSH loss averaged over the B(B−1)/2 pairs of a batch of outputs ``b`` (B, L), labels ``y`` (B,)."""

    def __init__(self, margin: float, alpha: float):
        super().__init__()
        self.margin = float(margin)
        self.alpha = float(alpha)

    def forward(self, b: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        sq = (b * b).sum(dim=1)
        d2 = (sq[:, None] + sq[None, :] - 2 * b @ b.T).clamp_min(0)
        same = y[:, None] == y[None, :]
        pair = torch.where(same, 0.5 * d2, 0.5 * nn.functional.relu(self.margin - d2))
        i, j = torch.triu_indices(len(y), len(y), offset=1, device=b.device)
        # Each sample's regulariser enters every pair it is in: the pairs' mean of α(r_i + r_j) is 2α·mean(r).
        regulariser = (b.abs() - 1).abs().sum(dim=1)
        return pair[i, j].mean() + 2 * self.alpha * regulariser.mean()


@persist.register
class DSH(NetworkCoder, BinaryCoder):
    __doc__ = """Deep Supervised Hashing: a backbone with ``n_bits`` linear outputs b trained on the DSH
    pairwise loss (module docstring) over all pairs of each mini-batch; bit = 1 where b >= 0.

    Parameters
    ----------
    n_bits : code length L, a multiple of 8.
    margin : m of the loss; None = 2L (the paper's).
    alpha : weight α of the ±1 regulariser (the paper's 0.01).""" + NETWORK_DOC + SUPERVISED_DOC

    _learned = ("network_",)
    supervised = True

    def __init__(self, n_bits: int = 32, margin: float | None = None, alpha: float = 0.01, backbone: str = "mlp",
                 hidden=(512, 512), image_shape=None, epochs: int = 20, batch_size: int = 128, lr: float = 1e-3,
                 weight_decay: float = 0.0, lr_schedule: str = "cosine", augment: bool = False,
                 validation_size=None, validation_database: int = 10000, patience: int | None = None,
                 random_state=None, device="cpu", verbose: bool = False):
        self._keep(locals())

    def _build_network(self, in_dim: int) -> nn.Module:
        return self._backbone(in_dim, self.n_bits)

    def fit(self, X, y=None) -> "DSH":
        """Train on rows ``X`` (n, d) with class labels ``y`` (n,). Returns self."""
        n_bits = check_n_bits(self.n_bits)
        margin = 2.0 * n_bits if self.margin is None else check_number(self.margin, "margin", positive=True)
        alpha = check_number(self.alpha, "alpha")
        return self._fit_coder(X, y, lambda n_classes: DSHLoss(margin, alpha),
                               lambda split: split.score_binary(self.encode, n_bits))

    def project(self, X) -> np.ndarray:
        """The network's outputs b (n, n_bits) float32; bit = 1 where b >= 0."""
        return self._outputs(X)
