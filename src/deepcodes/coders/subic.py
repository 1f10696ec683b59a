"""SuBiC: a supervised, structured binary code (Jain, Zepeda, Pérez, Gribonval, ICCV 2017;
ALGORITHMS.md section 4).

The network outputs M·K scores; a softmax per block gives M probability vectors p_m ∈ Δ^K. Training
loss on a mini-batch: cross-entropy of a linear classifier on the concatenated p, plus γ times the
mean per-block entropy of each sample's p_m (pushes every block toward one-hot), minus μ times the
mean entropy of the batch-averaged p_m (pushes each block to use all K entries). A database item's
code is its per-block argmax, b ∈ [0, K)^M (M·log2 K bits as indices, M·K bits as one-hot); a query
keeps its block probabilities and is compared by the block sum score(q, b) = Σ_m p_m(q)[b_m],
higher is more similar.

That score is an asymmetric (ADC) distance with tables T[q, m, j] = −p_m(q)[j]: SuBiC is a
:class:`~deepcodes.coders.base.Quantizer` whose codes are searched by ``ADCIndex`` (ascending
distance = descending score, ties by database id), and ``one_hot_codes`` gives the packed one-hot
bits for Hamming search (Hamming distance = 2·(M − number of equal blocks)).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import persist
from ..errors import InputError
from ..validation import check_codes, check_fitted, check_int, check_n_bits
from .base import Quantizer, pack_bits
from .network import NETWORK_DOC, NetworkCoder, check_number

# Codes are uint8 block indices, so a block has at most 2**8 entries.
MAX_BLOCK_BITS = 8
# Bits per block when n_blocks is not given: K = 4. At 32 bits on mnist-sup (seed 0) blocks of
# K = 256 gave mAP 0.68, K = 16 0.938 and K = 4 0.971; on cifar10-gist-sup 0.184, 0.202 and 0.212
# (docs/supervised.md): with few classes, small blocks let a class share blocks across its codes.
DEFAULT_BLOCK_BITS = 2


def block_shape(n_bits, n_blocks) -> tuple[int, int]:
    """(M, K) for an ``n_bits`` code of ``n_blocks`` blocks (None: one block per
    ``DEFAULT_BLOCK_BITS`` bits), or a clear InputError where the bits do not divide into blocks of
    at most 2**8 entries."""
    n_bits = check_int(n_bits, "n_bits", low=1)
    if n_blocks is None:
        if n_bits % DEFAULT_BLOCK_BITS:
            raise InputError(f"n_bits={n_bits} does not divide into blocks of {DEFAULT_BLOCK_BITS} bits "
                             f"({2 ** DEFAULT_BLOCK_BITS} entries); give n_blocks (a divisor of n_bits with at "
                             f"most {MAX_BLOCK_BITS} bits per block)")
        return n_bits // DEFAULT_BLOCK_BITS, 2 ** DEFAULT_BLOCK_BITS
    M = check_int(n_blocks, "n_blocks", low=1)
    if n_bits % M:
        raise InputError(f"n_bits={n_bits} does not divide into {M} blocks")
    if n_bits // M > MAX_BLOCK_BITS:
        raise InputError(f"{n_bits} bits in {M} blocks is {n_bits // M} bits per block; at most "
                         f"{MAX_BLOCK_BITS} (K = 256 entries) fit a uint8 code: use at least "
                         f"{-(-n_bits // MAX_BLOCK_BITS)} blocks")
    return M, 2 ** (n_bits // M)


class SuBiCLoss(nn.Module):
    """Classification cross-entropy on the block softmax + γ·mean sample entropy − μ·mean batch
    entropy (entropies averaged over the M blocks). Input: scores (B, M·K), labels (B,)."""

    def __init__(self, n_blocks: int, block_size: int, n_classes: int, gamma: float, mu: float):
        super().__init__()
        self.n_blocks, self.block_size = int(n_blocks), int(block_size)
        self.gamma, self.mu = float(gamma), float(mu)
        self.head = nn.Linear(self.n_blocks * self.block_size, int(n_classes))

    def forward(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(scores.reshape(-1, self.n_blocks, self.block_size), dim=-1)
        p = logp.exp()
        loss = nn.functional.cross_entropy(self.head(p.reshape(p.shape[0], -1)), y)
        sample_entropy = -(p * logp).sum(dim=-1).mean()
        mean_p = p.mean(dim=0)
        batch_entropy = -(mean_p * torch.log(mean_p.clamp_min(1e-12))).sum(dim=-1).mean()
        return loss + self.gamma * sample_entropy - self.mu * batch_entropy


@persist.register
class SuBiC(NetworkCoder, Quantizer):
    __doc__ = """SuBiC: M blocks of K-way one-hot codes learned with a classification loss and the
    entropy terms (module docstring); searched by the asymmetric block sum (ADC) or by Hamming
    distance on the one-hot bits.

    Parameters
    ----------
    n_bits : code length as block indices, M·log2 K bits.
    n_blocks : M; None = n_bits / 2 (K = 4, measured best with 10 classes; more classes may want
        larger blocks). K = 2**(n_bits / M) must be at most 256.
    gamma, mu : weights of the per-sample and batch entropy terms.""" + NETWORK_DOC + """
    ``fit(X, y)`` takes integer class labels y (n,) of at least two classes.

    Attributes
    ----------
    network_ : the trained network (torch module, eval mode) giving the M·K block scores.
    classes_ : the training classes; history_, best_epoch_ : as for DSH.
    """

    _learned = ("network_",)
    supervised = True
    # A plain class attribute shadows Quantizer.n_bits (a read-only property): here it is a parameter.
    n_bits = 32

    def __init__(self, n_bits: int = 32, n_blocks: int | None = None, gamma: float = 1.0, mu: float = 1.0,
                 backbone: str = "mlp", hidden=(512, 512), image_shape=None, epochs: int = 20,
                 batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 0.0, lr_schedule: str = "cosine",
                 augment: bool = False, validation_size=None, validation_database: int = 10000,
                 patience: int | None = None, random_state=None, device="cpu", verbose: bool = False):
        self._keep(locals())

    # --- code shape -------------------------------------------------------------------------
    @property
    def M(self) -> int:
        """Blocks per code (sub-codes, one byte each)."""
        return block_shape(self.n_bits, self.n_blocks)[0]

    @property
    def block_size(self) -> int:
        """K, the entries of each block."""
        return block_shape(self.n_bits, self.n_blocks)[1]

    @property
    def n_bits_per_code(self) -> int:
        return int(self.n_bits) // self.M

    @property
    def one_hot_bits(self) -> int:
        """Length M·K of the one-hot codes of :meth:`one_hot_codes`."""
        return self.M * self.block_size

    # --- fitting ----------------------------------------------------------------------------
    def _build_network(self, in_dim: int) -> nn.Module:
        return self._backbone(in_dim, self.M * self.block_size)

    def fit(self, X, y=None) -> "SuBiC":
        """Train on rows ``X`` (n, d) with class labels ``y`` (n,). Returns self."""
        check_n_bits(self.n_bits, multiple=1)
        M, K = block_shape(self.n_bits, self.n_blocks)
        gamma, mu = check_number(self.gamma, "gamma"), check_number(self.mu, "mu")

        def score(split):
            # Euclidean distance from the concatenated probabilities to a one-hot code is
            # ‖p‖² − 2·Σ_m p_m[b_m] + M: the same ranking as the block sum.
            return split.score_euclidean(self.block_probabilities(split.queries).reshape(len(split.queries), -1),
                                         self.decode(self.encode(split.database)))

        return self._fit_coder(X, y, lambda n_classes: SuBiCLoss(M, K, n_classes, gamma, mu), score)

    # --- encoding -----------------------------------------------------------------------------
    def block_probabilities(self, X) -> np.ndarray:
        """The block softmax p (n, M, K) float32 of input rows ``X`` (n, d)."""
        check_fitted(self, "network_")
        scores = torch.from_numpy(self._outputs(X)).reshape(-1, self.M, self.block_size)
        return torch.softmax(scores, dim=-1).numpy()

    def encode(self, X, batch_size: int = 65536) -> np.ndarray:
        """Codes (n, M) uint8: the argmax entry of each block (ties to the lower entry)."""
        X = self._check_input(X)
        batch_size = check_int(batch_size, "batch_size", low=1)
        out = np.empty((X.shape[0], self.M), dtype=np.uint8)
        for start in range(0, X.shape[0], batch_size):
            scores = self._outputs(X[start:start + batch_size]).reshape(-1, self.M, self.block_size)
            out[start:start + batch_size] = scores.argmax(axis=-1)
        return out

    def decode(self, codes) -> np.ndarray:
        """The one-hot blocks (n, M·K) float32 of codes (n, M)."""
        check_fitted(self, "network_")
        codes = self._check_block_codes(codes)
        out = np.zeros((codes.shape[0], self.M, self.block_size), dtype=np.float32)
        np.put_along_axis(out, codes[..., None].astype(np.int64), 1.0, axis=-1)
        return out.reshape(codes.shape[0], -1)

    def one_hot_codes(self, X) -> np.ndarray:
        """Packed one-hot codes (n, M·K/8) uint8 of input rows ``X``, for a ``HammingIndex`` of
        ``one_hot_bits`` bits."""
        return pack_bits(self.decode(self.encode(X)) > 0)

    def adc_tables(self, Q) -> np.ndarray:
        """Tables (nq, M, K) float32, T[q, m, j] = −p_m(q)[j]: distance = −score(q, b)."""
        return -self.block_probabilities(Q)

    def quantization_error(self, X) -> float:
        """Mean over rows of ``X`` of ‖p − one-hot(argmax p)‖² summed over blocks: how far the block
        probabilities are from the codes (0 when every block is one-hot)."""
        P = self.block_probabilities(X)
        onehot = self.decode(P.argmax(axis=-1)).reshape(P.shape)
        return float(np.mean(np.sum((P - onehot) ** 2, axis=(1, 2))))

    def _check_block_codes(self, codes) -> np.ndarray:
        codes = check_codes(codes, code_size=self.M)
        if codes.size and int(codes.max()) >= self.block_size:
            raise InputError(f"codes hold block entries >= K={self.block_size}")
        return codes
