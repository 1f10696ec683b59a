"""Binary deep neural networks for hashing (Do, Doan, Cheung, ECCV 2016): UH-BDNN and SH-BDNN.

See ALGORITHMS.md sections 1 and 2. Rows are points here (X is m×D, H and B are m×L), the
transpose of the paper's notation; every term keeps the paper's normalisation.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import persist
from ..errors import InputError
from ..validation import check_int
from .deep import DeepBinaryCoder, Schedule, TrainingState, frobenius_sq, independence
from .itq import itq_rotation, pca


def dcc_b_step(B: torch.Tensor, Q: torch.Tensor, G: torch.Tensor, n_sweeps: int) -> torch.Tensor:
    """Discrete cyclic coordinate descent on ``½ bᵀ G b − bᵀ q`` for every row b of B (m, L) in {−1, +1}.

    ``Q`` (m, L) holds each point's linear term, ``G`` (L, L) the shared symmetric quadratic term
    (UH-BDNN: G = W4ᵀW4, q = W4ᵀ(x − c4) + λ2·h). Bit k of every point at once is set to its exact
    optimum with the other bits fixed, sign(q_k − Σ_{j≠k} G_kj b_j); where that is 0 both values are
    optimal and the bit is kept, so no sweep ever raises the objective. Returns the updated B (a copy).
    """
    B = B.clone()
    diag = torch.diagonal(G)
    for _ in range(n_sweeps):
        for k in range(B.shape[1]):
            r = Q[:, k] - (B @ G[:, k] - B[:, k] * diag[k])
            B[:, k] = torch.where(r > 0, 1.0, torch.where(r < 0, -1.0, B[:, k]))
    return B


def similarity_loss(H: torch.Tensor, y: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    """``‖(1/L) H Hᵀ − S‖²`` for H (m, L) and class indices y (m,) in [0, C), S_ij = +1 for a pair of
    the same class and −1 otherwise, without the m×m matrices.

    With S = 2 YYᵀ − 11ᵀ (Y the one-hot labels) the norm expands into
    ``‖HᵀH‖²/L² − (2/L)(2 Σ_c ‖s_c‖² − ‖s‖²) + m²`` where s_c is the sum of H over class c and s
    over all points: O(m·L·(L + C)) time, O(L·(L + C)) extra memory.
    """
    m, L = H.shape
    n_classes = int(y.max()) + 1 if n_classes is None else n_classes
    class_sums = torch.zeros(n_classes, L, dtype=H.dtype, device=H.device).index_add(0, y, H)
    total = H.sum(dim=0)
    gram = H.T @ H
    return (frobenius_sq(gram) / L**2 - (2.0 / L) * (2.0 * frobenius_sq(class_sums) - frobenius_sq(total))
            + float(m) ** 2)


class _BDNN(DeepBinaryCoder):
    """Terms shared by UH-BDNN and SH-BDNN: weight decay, equality, independence, balance."""

    _activations = ("sigmoid", "sigmoid", "linear")

    def _regulariser(self, net, m) -> dict:
        return {"decay": 0.5 * self.lambda1 * sum(frobenius_sq(W) for W in net.weights)}

    def _encoder_loss(self, H: torch.Tensor, state: TrainingState) -> dict:
        # H holds n of the m training points (n = m but for a mini-batch): per-point means and the
        # 1/m Gram matrix are estimated from the n rows, ‖H·1‖² = m²·‖mean h‖² from their mean.
        n = H.shape[0]
        return {
            "equality": self.lambda2 / (2 * n) * frobenius_sq(H - state.B.to(H.dtype)),
            "independence": 0.5 * self.lambda3 * independence(H),
            "balance": self.lambda4 * state.m / (2 * n * n) * frobenius_sq(H.sum(dim=0)),
        }


_COMMON_DOC = """
    hidden : (n1, n2) hidden layer sizes; None = the authors' sizes for L (grown beyond 32 bits).
    lambda1, lambda2, lambda3, lambda4 : weights of weight decay, equality, independence and balance
        (the authors' 1e-5, 5e-2, 1e-2, 0.5e-6).
    schedule : "default" (the fast schedule) or "paper" (the authors': 20 outer iterations of 400
        L-BFGS iterations).
    n_outer : outer iterations (the authors' 20); None = the schedule's. The one with the best
        validation mAP is kept.
    n_inner : L-BFGS iterations of each network step; None = the schedule's.
    validation_size, validation_database, validation_neighbors : the early-stopping split carved
        from the training set (see :class:`~deepcodes.coders.deep.DeepBinaryCoder`).
    device : torch device for training ("cpu", "cuda").
    random_state : seed or numpy Generator.
    verbose : log the objective terms and the validation mAP of every outer iteration.
"""


@persist.register
class UHBDNN(_BDNN):
    __doc__ = """Unsupervised hashing with a binary deep neural network (UH-BDNN).

    A D → n1 → n2 → L network (sigmoid, sigmoid, linear) whose code layer H is tied to binary codes
    B, and a linear decoder that reconstructs X from B. Training alternates (i) the encoder by
    L-BFGS with B fixed, (ii) the decoder W4, c4 by its exact ridge solution, (iii) B by discrete
    cyclic coordinate descent, starting from PCA-ITQ codes.

    Parameters
    ----------
    n_bits : code length L, a multiple of 8.""" + _COMMON_DOC + """    n_sweeps : coordinate-descent sweeps of each B-step (the authors' 10).
    itq_iter : ITQ iterations of the initial codes (50).

    Attributes
    ----------
    W1_ .. c3_ : the encoder; W4_ (D, L), c4_ (D,) : the decoder (in the rescaled [0, 1] space).
    objective_, validation_map_, best_iteration_, offset_, scale_ : see DeepBinaryCoder.
    """

    _learned = _BDNN._learned + ("W4_", "c4_")

    def __init__(self, n_bits: int = 32, hidden=None, lambda1: float = 1e-5, lambda2: float = 5e-2,
                 lambda3: float = 1e-2, lambda4: float = 0.5e-6, schedule: str = "default", n_outer=None,
                 n_inner=None, n_sweeps: int = 10, itq_iter: int = 50, validation_size=None,
                 validation_database: int = 10000, validation_neighbors: int = 100, device: str = "cpu",
                 random_state=None, verbose: bool = False):
        self.n_bits = n_bits
        self.hidden = hidden
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.lambda3 = lambda3
        self.lambda4 = lambda4
        self.schedule = schedule
        self.n_outer = n_outer
        self.n_inner = n_inner
        self.n_sweeps = n_sweeps
        self.itq_iter = itq_iter
        self.validation_size = validation_size
        self.validation_database = validation_database
        self.validation_neighbors = validation_neighbors
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self) -> None:
        super()._check_params()
        check_int(self.n_sweeps, "n_sweeps", low=1)
        check_int(self.itq_iter, "itq_iter", low=0)

    def _check_fit_data(self, X):
        if self.n_bits > X.shape[1]:
            raise InputError(f"UHBDNN cannot make {self.n_bits} bits from {X.shape[1]}-dimensional data: its "
                             "codes start from PCA-ITQ, which gives at most one bit per input dimension")

    def _state_shapes(self) -> dict[str, tuple]:
        d = self.n_features_in_
        return {**super()._state_shapes(), "W4_": ((d, self.n_bits), np.float32), "c4_": ((d,), np.float32)}

    def _start(self, H, state):
        X = state.X.cpu().numpy()
        mean, components = pca(X, self.n_bits)
        V = (X.astype(np.float64) - mean) @ components
        R = itq_rotation(V, int(self.itq_iter), state.rng)
        state.B = torch.as_tensor(np.where(V @ R >= 0, 1.0, -1.0), dtype=torch.float64, device=state.X.device)
        fit_code_layer(state.net, state.X, state.B, self.lambda1)
        state.decoder = (torch.eye(X.shape[1], self.n_bits, dtype=torch.float64, device=state.X.device),
                         torch.zeros(X.shape[1], dtype=torch.float64, device=state.X.device))

    def _code_step(self, H, state):
        X, B = state.X, state.B
        W4, c4 = fit_decoder(X, B, self.lambda1)
        Q = self.lambda2 * H.double() + (X @ W4.float()).double() - c4 @ W4
        state.B = dcc_b_step(B, Q, W4.T @ W4, int(self.n_sweeps))
        state.decoder = (W4, c4)

    def _objective(self, H, state):
        W4, c4 = state.decoder
        residual = state.X - torch.addmm(c4.float(), state.B.float(), W4.float().T)
        terms = {"reconstruction": residual.pow(2).sum(dtype=torch.float64) / (2 * state.m),
                 "decoder_decay": 0.5 * self.lambda1 * frobenius_sq(W4)}
        terms.update(self._encoder_loss(H.double(), state))
        return terms

    def _finish(self, state):
        W4, c4 = state.decoder
        self.W4_ = W4.cpu().numpy().astype(np.float32)
        self.c4_ = c4.cpu().numpy().astype(np.float32)


def fit_code_layer(net, X: torch.Tensor, B: torch.Tensor, lambda1: float) -> None:
    """Set the (linear) code layer to the exact minimiser of the equality and decay terms given the
    hidden layers, ``1/(2m)‖Z W3 + c3 − B‖² + λ1/2 ‖W3‖²`` (Z the second layer's outputs), so that the
    first network step starts with H close to the ITQ codes instead of the eigenvector projection."""
    with torch.no_grad():
        W3, c3 = fit_decoder(B, net.hidden(X).double(), lambda1)
        net.weights[2].copy_(W3.T)
        net.biases[2].copy_(c3)


def fit_decoder(X: torch.Tensor, B: torch.Tensor, lambda1: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact minimiser (W4 (D, L), c4 (D,)) of ``1/(2m)‖X − B W4ᵀ − 1 c4ᵀ‖² + λ1/2 ‖W4‖²`` (rows are
    points): ridge regression of X on B with an unpenalised bias, solved in float64."""
    m = X.shape[0]
    mean_b = B.mean(dim=0)
    mean_x = X.mean(dim=0, dtype=torch.float64)
    Bc = B - mean_b
    gram = Bc.T @ Bc + m * lambda1 * torch.eye(B.shape[1], dtype=B.dtype, device=B.device)
    cross = (Bc.to(X.dtype).T @ X).double()      # Bc' X; the centring of X cancels against Bc's zero mean
    W4 = torch.linalg.solve(gram, cross).T
    return W4, mean_x - W4 @ mean_b


@persist.register
class SHBDNN(_BDNN):
    __doc__ = """Supervised hashing with a binary deep neural network (SH-BDNN).

    A D → n1 → n2 → L network (sigmoid, sigmoid, linear), no decoder, trained so that (1/L)·h_iᵀh_j
    matches S_ij = ±1 (same class or not), with the equality, independence, balance and decay terms
    of UH-BDNN. The similarity term is computed from class sums (:func:`similarity_loss`), never
    from an m×m matrix. Training alternates the network by L-BFGS and B = sign(H).

    Parameters
    ----------
    n_bits : code length L, a multiple of 8.""" + _COMMON_DOC + """    lambda5 : weight of the similarity term (the authors' 1e-2).

    ``fit(X, y)`` takes integer class labels y (n,) of at least two classes. The default ``n_inner``
    is larger than UH-BDNN's: the similarity term keeps improving over hundreds of L-BFGS
    iterations, where UH-BDNN's network only has to follow codes that change little.
    """

    supervised = True
    _schedules = {**_BDNN._schedules, "lbfgs": Schedule(20, 50)}

    def __init__(self, n_bits: int = 32, hidden=None, lambda1: float = 1e-5, lambda2: float = 5e-2,
                 lambda3: float = 1e-2, lambda4: float = 0.5e-6, lambda5: float = 1e-2, schedule: str = "default",
                 n_outer=None, n_inner=None, validation_size=None, validation_database: int = 10000,
                 validation_neighbors: int = 100, device: str = "cpu", random_state=None, verbose: bool = False):
        self.n_bits = n_bits
        self.hidden = hidden
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.lambda3 = lambda3
        self.lambda4 = lambda4
        self.lambda5 = lambda5
        self.schedule = schedule
        self.n_outer = n_outer
        self.n_inner = n_inner
        self.validation_size = validation_size
        self.validation_database = validation_database
        self.validation_neighbors = validation_neighbors
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _encoder_loss(self, H, state):
        terms = super()._encoder_loss(H, state)
        # λ5/(2m) times a sum over m² pairs, estimated from the n² pairs of the rows of H.
        n = H.shape[0]
        terms["similarity"] = (self.lambda5 * state.m / (2 * n * n)
                               * similarity_loss(H, state.y, state.n_classes))
        return terms
