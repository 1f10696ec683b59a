"""Deep Hashing (DH) and its supervised form (SDH), Liong, Lu, Wang, Moulin, Zhou, CVPR 2015.

The baseline that BDNN improves on (ALGORITHMS.md section 3): a tanh network whose last layer H
gives B = sign(H), trained on a quantization loss, a variance (balance) term, orthogonality of
every layer's weights and weight decay. Rows are points (H is m×L).

The objective is the paper's, divided by the number of training points m: the same minimiser, but
values of order one, which keeps L-BFGS's tolerances and line search meaningful for any m.
"""
from __future__ import annotations

import torch

from .. import persist
from ..errors import InputError
from .deep import DeepBinaryCoder, frobenius_sq, sign


def pair_distance_means(H: torch.Tensor, y: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ‖h_i − h_j‖² over ordered pairs i ≠ j of the same class and of different classes, from
    class sums in O(m·L·C): Σ_{i,j∈c} ‖h_i − h_j‖² = 2 n_c Σ_{i∈c} ‖h_i‖² − 2 ‖s_c‖²."""
    m = H.shape[0]
    norms = (H * H).sum(dim=1)
    counts = torch.bincount(y, minlength=n_classes).to(H.dtype)
    class_sums = torch.zeros(n_classes, H.shape[1], dtype=H.dtype, device=H.device).index_add(0, y, H)
    class_norms = torch.zeros(n_classes, dtype=H.dtype, device=H.device).index_add(0, y, norms)
    same = (2 * counts * class_norms).sum() - 2 * frobenius_sq(class_sums)
    every = 2 * m * norms.sum() - 2 * frobenius_sq(H.sum(dim=0))
    n_same = (counts * (counts - 1)).sum()
    n_diff = m * (m - 1) - n_same
    return same / n_same.clamp(min=1), (every - same) / n_diff.clamp(min=1)


@persist.register
class DeepHash(DeepBinaryCoder):
    """Deep Hashing: a D → n1 → n2 → L tanh network, B = sign(H), minimising (the paper's objective)

        ½‖B − H‖² − λ1/(2m)·tr(HᵀH) + λ2/2·Σ_l ‖W_lᵀW_l − I‖² + λ3/2·Σ_l (‖W_l‖² + ‖c_l‖²)

    and, with ``supervised=True`` (SDH), the discriminative term −λ1·α/2·(mean ‖h_i − h_j‖² over
    pairs of different classes − mean over pairs of the same class), from class sums.
    Training alternates the network by L-BFGS with B fixed and B = sign(H), in the same loop (and
    with the same layer sizes and validation early stopping) as UH-BDNN, so the two differ only in
    their objective. The logged terms are the paper's divided by m.

    Parameters
    ----------
    n_bits : code length L, a multiple of 8.
    supervised : SDH when True (``fit(X, y)`` then needs class labels).
    hidden : (n1, n2); None = the BDNN sizes for L.
    lambda1, lambda2, lambda3 : weights of the variance, orthogonality and decay terms (the DH
        paper's 100, 1e-3, 1e-3).
    alpha : weight of the discriminative term inside λ1's bracket (SDH only).
    n_outer, n_inner, validation_size, validation_database, validation_neighbors, device,
    random_state, verbose : as for :class:`~deepcodes.coders.bdnn.UHBDNN`.
    """

    _activations = ("tanh", "tanh", "tanh")

    def __init__(self, n_bits: int = 32, supervised: bool = False, hidden=None, lambda1: float = 100.0,
                 lambda2: float = 1e-3, lambda3: float = 1e-3, alpha: float = 1.0, n_outer: int = 20,
                 n_inner: int = 20, validation_size=None, validation_database: int = 10000,
                 validation_neighbors: int = 100, device: str = "cpu", random_state=None, verbose: bool = False):
        self.n_bits = n_bits
        self.supervised = supervised
        self.hidden = hidden
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.lambda3 = lambda3
        self.alpha = alpha
        self.n_outer = n_outer
        self.n_inner = n_inner
        self.validation_size = validation_size
        self.validation_database = validation_database
        self.validation_neighbors = validation_neighbors
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self) -> None:
        super()._check_params()
        if not isinstance(self.supervised, bool):
            raise InputError(f"supervised must be True or False, got {self.supervised!r}")

    def _start(self, H, ctx):
        ctx["B"] = sign(H.double())
        if self.supervised:
            ctx["n_classes"] = int(ctx["y"].max()) + 1

    def _regulariser(self, net, m) -> dict:
        ortho = sum(frobenius_sq(W.T @ W - torch.eye(W.shape[1], dtype=W.dtype, device=W.device))
                    for W in net.weights)
        decay = sum(frobenius_sq(W) for W in net.weights) + sum(frobenius_sq(c) for c in net.biases)
        return {"orthogonality": self.lambda2 / (2 * m) * ortho, "decay": self.lambda3 / (2 * m) * decay}

    def _encoder_loss(self, H, ctx) -> dict:
        m = H.shape[0]
        terms = {"quantization": frobenius_sq(ctx["B"].to(H.dtype) - H) / (2 * m),
                 "variance": -self.lambda1 / (2 * m * m) * frobenius_sq(H)}
        if self.supervised:
            within, between = pair_distance_means(H, ctx["y"], ctx["n_classes"])
            terms["discriminative"] = -self.lambda1 * self.alpha / (2 * m) * (between - within)
        return terms

    def _code_step(self, H, ctx):
        ctx["B"] = sign(H.double())

    def _objective(self, H, ctx):
        return self._encoder_loss(H.double(), ctx)
