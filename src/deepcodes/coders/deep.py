"""What the deep binary coders (UH-BDNN, SH-BDNN, Deep Hashing) share: the three-layer encoder, its
initialisation, the full-batch L-BFGS network step and the one alternating training loop with early
stopping on a validation split carved from the training set.

A subclass defines only what differs between the methods:

* ``_activations``: the non-linearity of each of the three layers;
* ``_start(ctx)``: the first codes B (and any other state) before the first outer iteration;
* ``_encoder_loss(H, ctx)``: the objective's terms that depend on the encoder (a dict of scalars);
* ``_regulariser(net, m)``: the terms on the weights (m training points);
* ``_code_step(H, ctx)``: the update of B (and of any decoder) with the encoder fixed;
* ``_objective(H, ctx)``: every term of the full objective, for the per-iteration log.

The loop is: network step with B fixed, then code step with the network fixed, then the validation
mAP; the weights of the outer iteration with the best validation mAP are kept.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

from ..errors import InputError
from ..validation import check_int, check_labels, check_matrix, check_n_bits, rng_from
from .base import BinaryCoder
from .early_stopping import ValidationSplit

log = logging.getLogger(__name__)

# Hidden sizes (n1, n2) of the authors' code for L = 8, 16, 24, 32 bits.
_AUTHORS_HIDDEN = {8: (90, 20), 16: (90, 30), 24: (100, 40), 32: (120, 50)}


def default_hidden(n_bits: int) -> tuple[int, int]:
    """Hidden sizes (n1, n2) for an L-bit code: the authors' for L <= 32; beyond, both keep growing
    at the rate of the authors' last step (n1 by 2.5 and n2 by 1.25 per extra bit)."""
    if n_bits in _AUTHORS_HIDDEN:
        return _AUTHORS_HIDDEN[n_bits]
    if n_bits < 32:
        return _AUTHORS_HIDDEN[min(_AUTHORS_HIDDEN, key=lambda b: abs(b - n_bits))]
    extra = n_bits - 32
    return 120 + (5 * extra) // 2, 50 + (5 * extra) // 4


ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "linear": lambda z: z}
_NUMPY_ACTIVATIONS = {"sigmoid": lambda z: 0.5 * (1.0 + np.tanh(0.5 * z)), "tanh": np.tanh, "linear": lambda z: z}


class Encoder(torch.nn.Module):
    """D -> n1 -> n2 -> L fully connected network, rows are points: ``H = f3(f2(f1(X W1 + c1) W2 + c2) W3 + c3)``."""

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray], activations: tuple[str, ...],
                 device: torch.device):
        super().__init__()
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.as_tensor(np.ascontiguousarray(w, np.float32), device=device)) for w in weights])
        self.biases = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.as_tensor(np.ascontiguousarray(c, np.float32), device=device)) for c in biases])
        self.activations = activations

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        Z = X
        for W, c, act in zip(self.weights, self.biases, self.activations):
            Z = ACTIVATIONS[act](torch.addmm(c, Z, W))
        return Z

    def numpy_state(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Copies of the weights and biases as float32 numpy arrays."""
        return ([w.detach().cpu().numpy().copy() for w in self.weights],
                [c.detach().cpu().numpy().copy() for c in self.biases])


def eigen_init(X: torch.Tensor, sizes: tuple[int, ...], activations: tuple[str, ...], rng: np.random.Generator
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The authors' initialisation: each hidden layer's weights are the top eigenvectors of the
    second moment of that layer's input, biases zero, so the first pass already keeps the main
    directions of the data. The code layer (the last) uses the covariance instead and the bias
    that centres its outputs: the top eigenvector of the uncentred moment of positive sigmoid
    outputs is their mean direction, which would start one bit constant over the whole set (the
    balance weight, 0.5e-6, is far too small to undo that), whereas centred outputs start every
    bit near balanced, as PCA hashing does. Eigenvector signs are fixed (largest entry positive)
    for reproducibility. A layer wider than its input (e.g. 90 units on 64-d data) has only as many
    eigenvectors as input dimensions; its other units get random unit-norm directions from ``rng``."""
    weights, biases = [], []
    Z = X
    for layer, (size, act) in enumerate(zip(sizes, activations)):
        last = layer == len(sizes) - 1
        mean = Z.double().mean(dim=0).cpu().numpy() if last else np.zeros(Z.shape[1])
        moment = (Z.T @ Z).double().cpu().numpy() / Z.shape[0] - np.outer(mean, mean)
        eigval, eigvec = np.linalg.eigh(moment)
        order = np.argsort(eigval)[::-1][:size]
        W = eigvec[:, order]
        signs = np.sign(W[np.argmax(np.abs(W), axis=0), np.arange(W.shape[1])])
        W = W * np.where(signs == 0, 1, signs)
        if W.shape[1] < size:
            extra = rng.standard_normal((W.shape[0], size - W.shape[1]))
            W = np.hstack([W, extra / np.linalg.norm(extra, axis=0)])
        W = np.ascontiguousarray(W, dtype=np.float32)
        weights.append(W)
        biases.append((-mean @ W).astype(np.float32))
        with torch.no_grad():
            Z = ACTIVATIONS[act](torch.addmm(torch.as_tensor(biases[-1], device=Z.device), Z,
                                              torch.as_tensor(W, device=Z.device)))
    return weights, biases


def lbfgs_step(params, loss_fn, n_iter: int, history_size: int = 20) -> int:
    """Minimise ``loss_fn()`` (a scalar tensor) over ``params`` by full-batch L-BFGS with a strong
    Wolfe line search, at most ``n_iter`` iterations. Returns the number of loss evaluations."""
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=n_iter, max_eval=int(n_iter * 1.25) + 5,
                            history_size=history_size, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)
    count = 0

    def closure():
        nonlocal count
        count += 1
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)
    return count


def frobenius_sq(A: torch.Tensor) -> torch.Tensor:
    return (A * A).sum()


def independence(H: torch.Tensor) -> torch.Tensor:
    """``‖(1/m) Hᵀ H − I‖²`` for H (m, L), rows are points."""
    G = H.T @ H / H.shape[0]
    return frobenius_sq(G - torch.eye(G.shape[0], dtype=G.dtype, device=G.device))


class DeepBinaryCoder(BinaryCoder):
    """Base of the deep binary coders: three-layer encoder, rescaling to [0, 1], the training loop.

    Subclasses set ``_activations`` and implement the hooks listed in the module docstring; their
    ``__init__`` takes every parameter below plus the method's own weights (``lambda*``).

    Common parameters
    -----------------
    n_bits : code length L, a multiple of 8.
    hidden : (n1, n2) hidden layer sizes; None = :func:`default_hidden` (the authors' sizes).
    n_outer : outer iterations (network step + code step), 20 in the authors' code.
    n_inner : L-BFGS iterations of each network step (the authors use 400; fewer per outer
        iteration reach the same objective over the outer loop at a fraction of the time).
    validation_size : training points held out as validation queries for early stopping; an int,
        a fraction in (0, 1), or 0 to keep the last iteration. None = min(1000, 10% of the points).
    validation_database : at most this many of the remaining training points form the validation
        database (the rest still train).
    validation_neighbors : k of the k-NN relevance of the validation split (unsupervised coders).
    device : torch device for training ("cpu", "cuda", ...).
    random_state : seed or numpy Generator (validation split, ITQ initialisation).
    verbose : log the objective terms and validation mAP of every outer iteration at INFO level.

    Attributes
    ----------
    offset_, scale_ : (1,) float32; inputs are mapped to ``(X - offset_) * scale_`` (global min-max
        rescaling to [0, 1] of the training set: one scale for every feature, which keeps the
        Euclidean neighbours of the original space).
    W1_, c1_, W2_, c2_, W3_, c3_ : the encoder's weights (in, out) and biases, float32.
    objective_ : (n_outer,) float64, the full objective after each outer iteration.
    validation_map_ : (n_outer,) float64, validation mAP after each outer iteration (NaN without validation).
    best_iteration_ : int, the outer iteration kept (0-based).
    """

    _activations: tuple[str, str, str] = ("sigmoid", "sigmoid", "linear")
    _learned = ("W1_", "c1_", "W2_", "c2_", "W3_", "c3_", "offset_", "scale_", "objective_", "validation_map_")
    supervised = False

    # ---- fitting -------------------------------------------------------------------------------
    def fit(self, X, y=None):
        """Train on ``X`` (n, d) (and labels ``y`` (n,) for supervised coders). Returns self."""
        self._check_params()
        self.n_bits = check_n_bits(self.n_bits)
        X = check_matrix(X)
        self._check_fit_data(X)
        if self.supervised:
            if y is None:
                raise InputError(f"{type(self).__name__} is supervised: fit(X, y) needs the class labels y")
            y = check_labels(y, X.shape[0], min_classes=2)
        n_outer = check_int(self.n_outer, "n_outer", low=1)
        n_inner = check_int(self.n_inner, "n_inner", low=1)
        hidden = self._hidden()
        device = self._device()
        rng = rng_from(self.random_state)

        lo, hi = float(X.min()), float(X.max())
        scale = 1.0 / (hi - lo) if hi > lo else 1.0
        self.offset_ = np.array([lo], np.float32)
        self.scale_ = np.array([scale], np.float32)
        Xs = self._rescale(X)

        # The validator encodes raw inputs (encode rescales them); a global affine rescaling leaves
        # Euclidean neighbours unchanged, so its ground truth is that of the raw data too.
        split = ValidationSplit(X, y if self.supervised else None, size=self.validation_size,
                                database_size=self.validation_database, n_neighbors=self.validation_neighbors,
                                rng=rng, what=type(self).__name__)
        tr_idx = split.train_idx

        X_train = Xs[tr_idx]
        del Xs
        Xt = torch.as_tensor(X_train, device=device)
        weights, biases = eigen_init(Xt, hidden + (self.n_bits,), self._activations, rng)
        net = Encoder(weights, biases, self._activations, device)
        ctx = {"X": Xt, "m": Xt.shape[0], "rng": rng, "device": device, "net": net, "X_numpy": X_train}
        if self.supervised:
            ctx["y"] = torch.as_tensor(np.unique(y[tr_idx], return_inverse=True)[1], device=device)
        self.n_features_in_ = X.shape[1]
        with torch.no_grad():
            self._start(net(Xt), ctx)

        objectives, val_maps = [], []
        best = (-math.inf, None, 0)
        for it in range(n_outer):
            start = time.perf_counter()
            n_eval = lbfgs_step(list(net.parameters()), lambda: self._network_loss(net, ctx), n_inner)
            with torch.no_grad():
                H = net(Xt)
                self._code_step(H, ctx)
                terms = {k: float(v) for k, v in self._objective(H, ctx).items()}
                terms.update({k: float(v) for k, v in self._regulariser(net, ctx["m"]).items()})
            total = sum(terms.values())
            objectives.append(total)
            self._set_weights(*net.numpy_state())
            score = split.score_binary(self.encode, self.n_bits) if split else math.nan
            val_maps.append(score)
            if not split or score > best[0]:
                best = (score, net.numpy_state(), it)
            if self.verbose:
                log.info("%s outer %d/%d: objective %.6g (%s), validation mAP %.4f, %d evaluations, %.1fs",
                         type(self).__name__, it + 1, n_outer, total,
                         ", ".join(f"{k} {v:.4g}" for k, v in terms.items()), score, n_eval,
                         time.perf_counter() - start)
        self._set_weights(*best[1])
        self.best_iteration_ = best[2]
        self.objective_ = np.array(objectives, np.float64)
        self.validation_map_ = np.array(val_maps, np.float64)
        self._finish(ctx)
        return self

    def _check_params(self) -> None:
        check_n_bits(self.n_bits)
        for name, value in self.get_params().items():
            if name.startswith(("lambda", "alpha")) and not (isinstance(value, (int, float)) and not isinstance(
                    value, bool) and math.isfinite(value) and value >= 0):
                raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
        check_int(self.n_outer, "n_outer", low=1)
        check_int(self.n_inner, "n_inner", low=1)
        self._hidden()
        if not isinstance(self.device, (str, torch.device)):
            raise InputError(f"device must be a string such as 'cpu' or 'cuda', got {self.device!r}")

    def _check_fit_data(self, X: np.ndarray) -> None:
        """Hook: refuse training data the method cannot learn from (X is already checked)."""

    def _state_shapes(self) -> dict[str, tuple]:
        d, L, n_outer = self.n_features_in_, self.n_bits, self.n_outer
        n1, n2 = self._hidden()
        f32 = np.float32
        return {"W1_": ((d, n1), f32), "c1_": ((n1,), f32), "W2_": ((n1, n2), f32), "c2_": ((n2,), f32),
                "W3_": ((n2, L), f32), "c3_": ((L,), f32), "offset_": ((1,), f32), "scale_": ((1,), f32),
                "objective_": ((n_outer,), np.float64, False), "validation_map_": ((n_outer,), np.float64, False)}

    def _network_loss(self, net: Encoder, ctx: dict) -> torch.Tensor:
        # The data terms are summed in float64: SH-BDNN's similarity term is a difference of numbers of
        # order m², which float32 would round away, and the line search compares such values.
        H = net(ctx["X"]).double()
        loss = sum(self._encoder_loss(H, ctx).values())
        return loss + sum(self._regulariser(net, ctx["m"]).values())

    def _set_weights(self, weights, biases) -> None:
        self.W1_, self.W2_, self.W3_ = weights
        self.c1_, self.c2_, self.c3_ = biases

    def _finish(self, ctx: dict) -> None:
        """Hook after training (e.g. to keep a decoder)."""

    def _hidden(self) -> tuple[int, int]:
        if self.hidden is None:
            return default_hidden(self.n_bits)
        try:
            sizes = tuple(self.hidden)
        except TypeError:
            raise InputError(f"hidden must be a pair (n1, n2) of layer sizes, got {self.hidden!r}") from None
        if len(sizes) != 2:
            raise InputError(f"hidden must be a pair (n1, n2) of layer sizes, got {self.hidden!r}")
        return tuple(check_int(s, "hidden size", low=1) for s in sizes)

    def _device(self) -> torch.device:
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            raise InputError(f"device {self.device!r} is not a torch device ({exc})") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("device 'cuda' was asked for but torch sees no CUDA GPU")
        return device

    # ---- encoding ------------------------------------------------------------------------------
    def _rescale(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.offset_[0]) * self.scale_[0]).astype(np.float32)

    def project(self, X) -> np.ndarray:
        """The code layer's outputs H (n, n_bits) float32; bit = 1 where H >= 0."""
        Z = self._rescale(np.asarray(X, dtype=np.float32))
        for W, c, act in zip((self.W1_, self.W2_, self.W3_), (self.c1_, self.c2_, self.c3_), self._activations):
            Z = _NUMPY_ACTIVATIONS[act](Z @ W + c).astype(np.float32)
        return Z

    def encode(self, X, batch_size: int = 65536) -> np.ndarray:
        """Packed codes (n, n_bits/8) uint8 of ``X`` (n, d)."""
        return super().encode(X, batch_size=batch_size)


def sign(H: torch.Tensor) -> torch.Tensor:
    """±1 with sign(0) = +1 (the encoding's rule: bit = 1 where H >= 0)."""
    return torch.where(H >= 0, 1.0, -1.0).to(H.dtype)
