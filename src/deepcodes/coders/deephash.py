"""Deep Hashing (DH) and its supervised form (SDH), Liong, Lu, Wang, Moulin, Zhou, CVPR 2015.

The baseline that BDNN improves on (ALGORITHMS.md section 3): a tanh network whose last layer H
gives B = sign(H), trained on a quantization loss, a variance (balance) term, orthogonality of
every layer's weights and weight decay. Rows are points (H is m×L).

Scaling (see docs/bdnn.md, "Deep Hashing"): the paper updates the network from each sample's
gradient, in which the quantization term weighs 1, the variance term λ1/N and the orthogonality
and decay terms λ2 and λ3 once per update. The full-batch objective with that gradient is the
per-sample *mean* of the quantization and variance terms plus the regularisers unscaled:

    1/(2m)‖B − H‖² − λ1/(2m²)·tr(HᵀH) + λ2/2·Σ_l ‖W_lᵀW_l − I‖² + λ3/2·Σ_l (‖W_l‖² + ‖c_l‖²)

Dividing the regularisers by m as well (the printed sum over N samples, divided by N) leaves the
orthogonality term 1/m as strong: at the paper's λ2 = 1e-3 the network then lowers the objective
only by growing its weights until tanh saturates, and its codes stay those of the initialisation.
"""
from __future__ import annotations

import torch

from .. import persist
from ..errors import InputError
from ..validation import check_int
from .deep import DeepBinaryCoder, TrainingState, frobenius_sq, sign
from .itq import itq_rotation


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
    """Deep Hashing: a D → n1 → n2 → L tanh network, B = sign(H) (H is m×L), minimising the paper's
    objective with its per-sample gradient's weights (module docstring)

        1/(2m)‖B − H‖² − λ1/(2m²)·tr(HᵀH) + λ2/2·Σ_l ‖W_lᵀW_l − I‖² + λ3/2·Σ_l (‖W_l‖² + ‖c_l‖²)

    and, with ``supervised=True`` (SDH), the discriminative term −λ1·α/(2m)·(mean ‖h_i − h_j‖² over
    pairs of different classes − mean over pairs of the same class), from class sums.
    Training alternates the network by L-BFGS with B fixed and B = sign(H), in the same loop (and
    with the same layer sizes and validation early stopping) as UH-BDNN, so the two differ only in
    their objective.

    Parameters
    ----------
    n_bits : code length L, a multiple of 8.
    supervised : SDH when True (``fit(X, y)`` then needs class labels).
    hidden : (n1, n2); None = the BDNN sizes for L.
    lambda1, lambda2, lambda3 : weights of the variance, orthogonality and decay terms (the DH
        paper's 100, 1e-3, 1e-3).
    alpha : weight of the discriminative term inside λ1's bracket (SDH only).
    itq_iter : ITQ iterations that rotate the eigenvector-initialised code layer before training
        (50); 0 keeps the plain eigenvector start.
    schedule, n_outer, n_inner, validation_size, validation_database, validation_neighbors, device,
    random_state, verbose : as for :class:`~deepcodes.coders.bdnn.UHBDNN`.
    """

    _activations = ("tanh", "tanh", "tanh")

    def __init__(self, n_bits: int = 32, supervised: bool = False, hidden=None, lambda1: float = 100.0,
                 lambda2: float = 1e-3, lambda3: float = 1e-3, alpha: float = 1.0, itq_iter: int = 50,
                 schedule: str = "default",
                 n_outer=None, n_inner=None, validation_size=None, validation_database: int = 10000,
                 validation_neighbors: int = 100, device: str = "cpu", random_state=None, verbose: bool = False):
        self.n_bits = n_bits
        self.supervised = supervised
        self.hidden = hidden
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.lambda3 = lambda3
        self.alpha = alpha
        self.itq_iter = itq_iter
        self.schedule = schedule
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
        check_int(self.itq_iter, "itq_iter", low=0)

    def _start(self, H, state: TrainingState) -> None:
        """B = sign(H) after rotating the code layer (W3 ← W3 R, c3 ← c3 R) by the ITQ rotation of its
        pre-activations, which the eigenvector start centres: R minimises the quantization term
        ‖B − P R‖² over rotations (for the linear part of tanh) and keeps W3's columns orthonormal,
        so the orthogonality term stays 0. Without it the bits are the top principal directions of
        the last hidden layer (PCA hashing), whose unequal variances cost ITQ's whole gain."""
        net = state.net
        if self.itq_iter:
            W3, c3 = net.weights[-1], net.biases[-1]
            P = torch.addmm(c3, net.hidden(state.X), W3).double().cpu().numpy()
            R = torch.as_tensor(itq_rotation(P, int(self.itq_iter), state.rng), dtype=W3.dtype, device=W3.device)
            W3.copy_(W3 @ R)
            c3.copy_(c3 @ R)
            H = net(state.X)
        state.B = sign(H.double())

    def _regulariser(self, net, m) -> dict:
        ortho = sum(frobenius_sq(W.T @ W - torch.eye(W.shape[1], dtype=W.dtype, device=W.device))
                    for W in net.weights)
        decay = sum(frobenius_sq(W) for W in net.weights) + sum(frobenius_sq(c) for c in net.biases)
        return {"orthogonality": 0.5 * self.lambda2 * ortho, "decay": 0.5 * self.lambda3 * decay}

    def _diagnostics(self, H, state: TrainingState) -> dict:
        """Per layer l: ‖W_l‖_F, ‖W_lᵀW_l − I‖_F and the fraction of its tanh outputs beyond ±0.99."""
        out, Z = {}, state.X
        for layer, (W, c) in enumerate(zip(state.net.weights, state.net.biases), 1):
            Z = torch.tanh(torch.addmm(c, Z, W))
            eye = torch.eye(W.shape[1], dtype=W.dtype, device=W.device)
            out[f"W{layer}_norm"] = torch.linalg.norm(W)
            out[f"W{layer}_ortho"] = torch.linalg.norm(W.T @ W - eye)
            out[f"saturated{layer}"] = (Z.abs() > 0.99).double().mean()
        return out

    def _encoder_loss(self, H, state: TrainingState) -> dict:
        # Per-point and per-pair means over the n rows of H (all m points, or a mini-batch of them).
        n, m = H.shape[0], state.m
        terms = {"quantization": frobenius_sq(state.B.to(H.dtype) - H) / (2 * n),
                 "variance": -self.lambda1 / (2 * m * n) * frobenius_sq(H)}
        if self.supervised:
            within, between = pair_distance_means(H, state.y, state.n_classes)
            terms["discriminative"] = -self.lambda1 * self.alpha / (2 * m) * (between - within)
        return terms
