"""What the deep binary coders (UH-BDNN, SH-BDNN, Deep Hashing) share: the three-layer encoder, its
initialisation, the full-batch L-BFGS network step and the one alternating training loop with early
stopping on a validation split carved from the training set.

The loop and a coder's hooks share one :class:`TrainingState`. A subclass defines only what differs
between the methods:

* ``_activations``: the non-linearity of each of the three layers;
* ``_encoder_loss(H, state)``: the objective's terms that depend on the encoder (a dict of scalars);
* ``_regulariser(net, m)``: the terms on the weights (m training points);
* optionally ``_start(H, state)`` (the first codes B; default sign(H)), ``_code_step(H, state)`` (the
  update of B, and of any decoder, with the encoder fixed; default B = sign(H)), ``_objective(H, state)``
  (every term of the full objective; default the encoder terms), ``_diagnostics(H, state)`` (extra
  per-iteration measurements) and ``_finish(state)`` (after training).

The loop is: network step with B fixed, then code step with the network fixed, then the validation
mAP; the weights of the outer iteration with the best validation mAP are kept. Every term of the
objective and the codes' movement are recorded per outer iteration in ``history_``.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm.auto import tqdm

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
        return ACTIVATIONS[self.activations[-1]](torch.addmm(self.biases[-1], self.hidden(X), self.weights[-1]))

    def hidden(self, X: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's outputs (n, n2), the code layer's input."""
        Z = X
        for W, c, act in zip(self.weights[:-1], self.biases[:-1], self.activations[:-1]):
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


@dataclass
class TrainingState:
    """What the training loop and a coder's hooks share during one fit.

    X : (m, D) float32, the rescaled training points, on the training device.
    net : the encoder being trained.
    rng : the fit's numpy Generator.
    B : (m, L) float64 codes in {-1, +1}, the targets of the network step (set by ``_start``).
    y : (m,) int64 class indices in [0, n_classes) for a supervised coder, else None.
    n_classes : number of classes (0 without labels).
    decoder : a decoder fitted by the code step, e.g. UH-BDNN's (W4 (D, L), c4 (D,)); None without one.
    m : the number of training points, which the objective's 1/m scalings refer to. A mini-batch
        (:meth:`batch`) keeps the whole set's m, so that its terms estimate the whole objective.
    optimizer : the network step's optimiser, kept between outer iterations (warm start).
    """

    X: torch.Tensor
    net: Encoder
    rng: np.random.Generator
    B: torch.Tensor | None = None
    y: torch.Tensor | None = None
    n_classes: int = 0
    decoder: tuple[torch.Tensor, ...] | None = None
    m: int = 0
    optimizer: torch.optim.Optimizer | None = None

    def __post_init__(self):
        self.m = self.m or int(self.X.shape[0])

    def batch(self, idx: torch.Tensor) -> "TrainingState":
        """The same state restricted to the points ``idx`` (m unchanged)."""
        return replace(self, X=self.X[idx], B=self.B[idx], y=None if self.y is None else self.y[idx])


@dataclass(frozen=True)
class Schedule:
    """How the network steps run.

    n_outer : outer iterations (network step + code step).
    n_inner : per network step, L-BFGS iterations ("lbfgs", full batch) or epochs over the
        training points ("adam": mini-batches of ``batch_size``, learning rate ``lr``; the
        optimiser's moments carry over from one outer iteration to the next).
    """

    n_outer: int
    n_inner: int
    optimizer: str = "lbfgs"
    batch_size: int = 1024
    lr: float = 1e-3


# The BDNN authors' schedule: 20 alternations of 400 full-batch L-BFGS iterations.
PAPER_SCHEDULE = Schedule(20, 400)


class DeepBinaryCoder(BinaryCoder):
    """Base of the deep binary coders: three-layer encoder, rescaling to [0, 1], the training loop.

    Subclasses set ``_activations`` and implement the hooks listed in the module docstring; their
    ``__init__`` takes every parameter below plus the method's own weights (``lambda*``).

    Common parameters
    -----------------
    n_bits : code length L, a multiple of 8.
    hidden : (n1, n2) hidden layer sizes; None = :func:`default_hidden` (the authors' sizes).
    schedule : "paper" (the BDNN authors': 20 outer iterations of 400 full-batch L-BFGS iterations
        each), "lbfgs" (20 x 20 L-BFGS iterations), "adam" (20 x 2 epochs of mini-batch Adam), or
        "default" (the coder's fast schedule, one of the last two); see :class:`Schedule`.
    n_outer : outer iterations (network step + code step); None = the schedule's; 0 keeps the
        initialisation (the untrained network and, for UH-BDNN, its initial decoder).
    n_inner : L-BFGS iterations (or Adam epochs) of each network step; None = the schedule's.
    validation_size : training points held out as validation queries for early stopping; an int,
        a fraction in (0, 1), or 0 to keep the last iteration. None = min(1000, 10% of the points).
    validation_database : at most this many of the remaining training points form the validation
        database (the rest still train).
    validation_neighbors : k of the k-NN relevance of the validation split (unsupervised coders).
    device : torch device for training ("cpu", "cuda", ...).
    random_state : seed or numpy Generator (validation split, initialisation).
    verbose : log the objective terms and validation mAP of every outer iteration at INFO level.

    Attributes
    ----------
    offset_, scale_ : (1,) float32; inputs are mapped to ``(X - offset_) * scale_`` (global min-max
        rescaling to [0, 1] of the training set: one scale for every feature, which keeps the
        Euclidean neighbours of the original space).
    W1_, c1_, W2_, c2_, W3_, c3_ : the encoder's weights (in, out) and biases, float32.
    n_outer_, n_inner_ : the schedule that was run.
    objective_ : (n_outer_,) float64, the full objective after each outer iteration.
    validation_map_ : (n_outer_,) float64, validation mAP after each outer iteration (NaN without validation).
    best_iteration_ : int, the outer iteration kept (0-based; -1 when n_outer is 0).
    history_ : list of n_outer_ + 1 dicts: ``history_[0]`` is the starting point (before any network
        step), ``history_[i]`` the state after outer iteration i. Each holds every objective term,
        ``objective``, ``validation_map``, ``codes_changed`` (fraction of the training points' encoder
        bits that differ from those of the network the loop started from), ``codes_flipped``
        (fraction of the bits of B changed by this iteration's code step), ``fit_error`` (fraction of
        the training bits where the network's sign disagrees with the B it was fitted to), ``code_imbalance`` (mean
        over bits of |mean of B's column|: 0 when every bit splits the points in halves), ``evaluations`` (loss
        evaluations of the network step), ``seconds``, and the coder's ``_diagnostics``. Not saved
        by ``save``.
    """

    _activations: tuple[str, str, str] = ("sigmoid", "sigmoid", "linear")
    _learned = ("W1_", "c1_", "W2_", "c2_", "W3_", "c3_", "offset_", "scale_", "objective_", "validation_map_")
    # Named schedules besides "paper", and which of them "default" means.
    _schedules: dict[str, Schedule] = {"lbfgs": Schedule(20, 20), "adam": Schedule(20, 2, "adam")}
    _default_schedule = "lbfgs"
    supervised = False

    # ---- fitting -------------------------------------------------------------------------------
    def fit(self, X, y=None, progress: bool = False):
        """Train on ``X`` (n, d) (and labels ``y`` (n,) for supervised coders); ``progress`` shows a
        bar over the outer iterations. Returns self."""
        self._check_params()
        self.n_bits = check_n_bits(self.n_bits)
        X = check_matrix(X)
        self._check_fit_data(X)
        if self.supervised:
            if y is None:
                raise InputError(f"{type(self).__name__} is supervised: fit(X, y) needs the class labels y")
            y = check_labels(y, X.shape[0], min_classes=2)
        schedule = self._schedule()
        n_outer = schedule.n_outer
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

        Xt = torch.as_tensor(Xs[tr_idx], device=device)
        del Xs
        weights, biases = eigen_init(Xt, hidden + (self.n_bits,), self._activations, rng)
        net = Encoder(weights, biases, self._activations, device)
        state = TrainingState(X=Xt, net=net, rng=rng)
        if self.supervised:
            state.y = torch.as_tensor(np.unique(y[tr_idx], return_inverse=True)[1], device=device)
            state.n_classes = int(state.y.max()) + 1
        self.n_features_in_ = X.shape[1]
        self.n_outer_, self.n_inner_ = n_outer, schedule.n_inner
        started = time.perf_counter()
        with torch.no_grad():
            self._start(net(Xt), state)
            H = net(Xt)
            start_bits = H >= 0
        history = [self._record(0, H, state, state.B, split, started, 0)]
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))

        # n_outer = 0 keeps the initialisation itself (a baseline for what training adds).
        best = (-math.inf, net.numpy_state(), state.decoder, -1)
        name = type(self).__name__
        bar = tqdm(range(1, n_outer + 1), disable=not progress, desc=f"{name} {self.n_bits} bits", unit="outer")
        for it in bar:
            started = time.perf_counter()
            previous_B = state.B
            n_eval = self._network_step(state, schedule, generator)
            with torch.no_grad():
                H = net(Xt)
                self._code_step(H, state)
            record = self._record(it, H, state, previous_B, split, started, n_eval, start_bits)
            history.append(record)
            score = record["validation_map"]
            if not split or score > best[0]:
                best = (score, net.numpy_state(), state.decoder, it - 1)
            bar.set_postfix(objective=f"{record['objective']:.5g}", val_map=f"{score:.4f}")
            if self.verbose:
                log.info("%s outer %d/%d: %s", name, it, n_outer,
                         ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "iteration"))
        bar.close()
        self._set_weights(*best[1])
        state.decoder = best[2]
        self.best_iteration_ = best[3]
        self.history_ = history
        self.objective_ = np.array([r["objective"] for r in history[1:]], np.float64)
        self.validation_map_ = np.array([r["validation_map"] for r in history[1:]], np.float64)
        self._finish(state)
        return self

    @torch.no_grad()
    def _record(self, it: int, H: torch.Tensor, state: TrainingState, previous_B: torch.Tensor, split,
                started: float, n_eval: int, start_bits: torch.Tensor | None = None) -> dict:
        """One ``history_`` entry: every objective term, the codes' movement, the coder's diagnostics
        and the validation mAP of the network as it is now (its weights are copied to the coder)."""
        terms = {k: float(v) for k, v in self._objective(H, state).items()}
        terms.update({k: float(v) for k, v in self._regulariser(state.net, state.m).items()})
        record = {"iteration": it, **terms, "objective": sum(terms.values()),
                  "codes_changed": 0.0 if start_bits is None else float(((H >= 0) != start_bits).double().mean()),
                  "codes_flipped": float((state.B != previous_B).double().mean()),
                  "fit_error": float(((H >= 0) != (previous_B > 0)).double().mean()),
                  "code_imbalance": float(state.B.mean(dim=0).abs().mean())}
        record.update({k: float(v) for k, v in self._diagnostics(H, state).items()})
        self._set_weights(*state.net.numpy_state())
        record["validation_map"] = split.score_binary(self.encode, self.n_bits) if split else math.nan
        record.update(evaluations=n_eval, seconds=time.perf_counter() - started)
        return record

    def _check_params(self) -> None:
        check_n_bits(self.n_bits)
        for name, value in self.get_params().items():
            if name.startswith(("lambda", "alpha")) and not (isinstance(value, (int, float)) and not isinstance(
                    value, bool) and math.isfinite(value) and value >= 0):
                raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
        self._schedule()
        self._hidden()
        if not isinstance(self.device, (str, torch.device)):
            raise InputError(f"device must be a string such as 'cpu' or 'cuda', got {self.device!r}")

    def _state_shapes(self) -> dict[str, tuple]:
        d, L, n_outer = self.n_features_in_, self.n_bits, self._schedule().n_outer
        n1, n2 = self._hidden()
        f32 = np.float32
        return {"W1_": ((d, n1), f32), "c1_": ((n1,), f32), "W2_": ((n1, n2), f32), "c2_": ((n2,), f32),
                "W3_": ((n2, L), f32), "c3_": ((L,), f32), "offset_": ((1,), f32), "scale_": ((1,), f32),
                "objective_": ((n_outer,), np.float64, False), "validation_map_": ((n_outer,), np.float64, False)}

    def _network_loss(self, state: TrainingState) -> torch.Tensor:
        # The data terms are summed in float64: SH-BDNN's similarity term is a difference of numbers of
        # order m², which float32 would round away, and the line search compares such values.
        H = state.net(state.X).double()
        loss = sum(self._encoder_loss(H, state).values())
        return loss + sum(self._regulariser(state.net, state.m).values())

    def _schedule(self) -> Schedule:
        """The named schedule with ``n_outer`` / ``n_inner`` where they are set."""
        schedules = {"paper": PAPER_SCHEDULE, **self._schedules}
        schedules["default"] = schedules[self._default_schedule]
        if self.schedule not in schedules:
            raise InputError(f"schedule must be one of {', '.join(schedules)}, got {self.schedule!r}")
        chosen = schedules[self.schedule]
        return replace(chosen,
                       n_outer=check_int(chosen.n_outer if self.n_outer is None else self.n_outer, "n_outer", low=0),
                       n_inner=check_int(chosen.n_inner if self.n_inner is None else self.n_inner, "n_inner", low=1))

    def _network_step(self, state: TrainingState, schedule: Schedule, generator: torch.Generator) -> int:
        """Train the encoder with B fixed; returns the number of loss evaluations (batches for Adam)."""
        if schedule.optimizer == "lbfgs":
            return lbfgs_step(list(state.net.parameters()), lambda: self._network_loss(state), schedule.n_inner)
        if state.optimizer is None:
            state.optimizer = torch.optim.Adam(state.net.parameters(), lr=schedule.lr)
        n, count = state.X.shape[0], 0
        for _ in range(schedule.n_inner):
            perm = torch.randperm(n, generator=generator).to(state.X.device)
            for start in range(0, n - 1, schedule.batch_size):
                state.optimizer.zero_grad(set_to_none=True)
                self._network_loss(state.batch(perm[start:start + schedule.batch_size])).backward()
                state.optimizer.step()
                count += 1
        return count

    # ---- hooks with defaults -------------------------------------------------------------------
    def _check_fit_data(self, X: np.ndarray) -> None:
        """Refuse training data the method cannot learn from (X is already checked)."""

    def _start(self, H: torch.Tensor, state: TrainingState) -> None:
        state.B = sign(H.double())

    def _code_step(self, H: torch.Tensor, state: TrainingState) -> None:
        state.B = sign(H.double())

    def _objective(self, H: torch.Tensor, state: TrainingState) -> dict:
        return self._encoder_loss(H.double(), state)

    def _diagnostics(self, H: torch.Tensor, state: TrainingState) -> dict:
        return {}

    def _finish(self, state: TrainingState) -> None:
        """Hook after training, with the best iteration's weights set (e.g. to keep a decoder)."""

    def _set_weights(self, weights, biases) -> None:
        self.W1_, self.W2_, self.W3_ = weights
        self.c1_, self.c2_, self.c3_ = biases

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
