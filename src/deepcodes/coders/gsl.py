"""GSL: a deep representation trained jointly with a vector quantizer through the Gradient Snapping
Layer (Liu & Lu, 2016; ALGORITHMS.md section 5), and its baselines on the same training loop."""
from __future__ import annotations

import logging

import numpy as np
import torch
from sklearn.base import clone

from .. import persist
from ..errors import FormatError, InputError
from ..validation import as_format_errors, check_fitted, check_int, check_n_bits, seed_from
from .base import Quantizer
from .network import NETWORK_DOC, NetworkCoder, check_number
from .pq import OPQ, PQ
from .rq import RQ

log = logging.getLogger(__name__)

QUANTIZERS = {"pq": PQ, "opq": OPQ, "rq": RQ}
QUANTIZATION_MODES = ("gsl", "loss", "none")
# Codebook refreshes during training are cheaper fits than the final one: they are redone often
# and only need to track the moving representation.
_REFRESH_ITERS = {"n_iter": 10, "n_outer": 3}


@persist.register
class GSLQuantizer(NetworkCoder, Quantizer):
    __doc__ = """A network f (MLP or small CNN) followed by a vector quantizer q (PQ, OPQ or RQ) on its output.

    Training alternates (a) fitting q on the current representations of a training sample and
    (b) training f through a :class:`~deepcodes.nn.GradientSnapping` layer with q fixed
    (``quantization="gsl"``). The same loop gives the baselines: ``quantization="none"`` (q fitted
    once after training, post hoc) and ``quantization="loss"`` (``quant_weight * ||z - q(z)||²``
    added to the loss, DQN-style). ``quant_weight`` > 0 with ``"gsl"`` combines both. With a
    validation split, every epoch from ``quant_start`` on is scored by the ADC mAP of the validation
    queries over the validation database with q refitted on the epoch's representations, and the
    best epoch is kept.

    Codes, ``decode`` and ADC search are q's, applied to f's output, so ``encode``, ``adc_tables``
    and ``query_bias`` take raw input rows; ``decode`` returns reconstructions of representations.

    Parameters
    ----------
    n_bits : code length, a multiple of 8: ``n_bits / 8`` sub-quantizers (stages) of 256 codewords.
    quantizer : "pq", "opq", "rq" or an unfitted PQ/OPQ/RQ whose code size is ``n_bits``.
    dim : representation dimension.
    normalize : scale the representation to unit norm (then the classification loss uses a cosine
        classifier with logit scale ``scale``).
    loss : "classification" (softmax on the representation), "contrastive" or "triplet".
    margin : margin of the contrastive and triplet losses.
    quantization : "gsl", "loss" or "none" (see above).
    alpha, n_neighbors, snap : the snapping layer's mixing weight, candidates and mode.
    quant_weight : weight λ of the quantization loss.
    quant_start : first epoch (0-based) of quantization awareness; the codebook is refitted every
        ``refresh_every`` epochs from then on.
    max_train : the codebook is fitted on at most this many training representations.
    init : a fitted GSLQuantizer with the same network whose weights (and classifier head) start
        training here (for schedules that share a warm-up; ``epochs=0`` only refits q); its
        validation split is reused, so the points it held out stay unseen.""" + NETWORK_DOC + """
    Attributes
    ----------
    network_ : the trained network (torch module, in eval mode).
    quantizer_ : the fitted inner PQ/OPQ/RQ on the representations.
    classes_ : the training labels' classes.
    history_ : one dict per epoch (loss, quantization error, fraction of gradients snapped,
        validation mAP); best_epoch_ : the epoch kept.
    """

    _learned = ("quantizer_",)
    _min_rows = 256     # one per codeword
    # A plain class attribute shadows Quantizer.n_bits (a read-only property): here it is a parameter.
    n_bits = 32

    def __init__(self, n_bits: int = 32, quantizer="pq", backbone: str = "mlp", dim: int = 64,
                 hidden=(256,), image_shape=None, normalize: bool = False, scale: float = 16.0,
                 loss: str = "classification", margin: float = 1.0, quantization: str = "gsl",
                 alpha: float = 0.5, n_neighbors: int = 16, snap: str = "direction", quant_weight: float = 0.0,
                 epochs: int = 10, quant_start: int = 0, refresh_every: int = 1, batch_size: int = 128,
                 lr: float = 1e-3, weight_decay: float = 0.0, lr_schedule: str = "constant",
                 augment: bool = False, max_train: int | None = 20_000, init=None, validation_size=None,
                 validation_database: int = 10000, patience: int | None = None, random_state=None,
                 device="cpu", verbose: bool = False):
        self._keep(locals())

    # --- code shape -------------------------------------------------------------------------
    @property
    def M(self) -> int:
        """Sub-quantizers (bytes) per code."""
        q = getattr(self, "quantizer_", None)
        return int(q.M) if q is not None else int(self.n_bits) // 8

    @property
    def n_bits_per_code(self) -> int:
        q = getattr(self, "quantizer_", None)
        return int(q.n_bits_per_code) if q is not None else 8

    # --- fitting ----------------------------------------------------------------------------
    def _check_params(self, check_device: bool = True) -> None:
        from ..nn import LOSSES
        from ..nn.snapping import check_snap_params

        check_n_bits(self.n_bits)
        self._quantizer_template()
        self._check_network_params(check_device)
        if self.loss not in LOSSES:
            raise InputError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.quantization not in QUANTIZATION_MODES:
            raise InputError(f"quantization must be one of {QUANTIZATION_MODES}, got {self.quantization!r}")
        check_int(self.dim, "dim", low=1)
        if not isinstance(self.normalize, (bool, np.bool_)):
            raise InputError(f"normalize must be True or False, got {self.normalize!r}")
        check_number(self.scale, "scale", positive=True)
        check_snap_params(self.alpha, self.n_neighbors, self.snap)
        for name in ("margin", "quant_weight"):
            check_number(getattr(self, name), name)
        epochs = check_int(self.epochs, "epochs", low=0)
        start = check_int(self.quant_start, "quant_start", low=0)
        check_int(self.refresh_every, "refresh_every", low=1)
        if self.max_train is not None:
            check_int(self.max_train, "max_train", low=256)
        if self.quantization != "none" and start >= epochs:
            raise InputError(f"quantization={self.quantization!r} needs quant_start ({start}) < epochs ({epochs})")
        if self.quantization == "loss" and self.quant_weight == 0:
            raise InputError("quantization='loss' needs quant_weight > 0")

    def _quantizer_template(self) -> Quantizer:
        """An unfitted inner quantizer whose code size is ``n_bits`` (InputError otherwise)."""
        q = self.quantizer
        M = int(self.n_bits) // 8
        if isinstance(q, str):
            if q.lower() not in QUANTIZERS:
                raise InputError(f"quantizer must be one of {sorted(QUANTIZERS)} or a PQ/OPQ/RQ, got {q!r}")
            return QUANTIZERS[q.lower()](M=M, n_bits_per_code=8)
        if not isinstance(q, (PQ, RQ)):
            raise InputError(f"quantizer must be one of {sorted(QUANTIZERS)} or a PQ/OPQ/RQ, got {type(q).__name__}")
        bits = int(q.M) * int(q.n_bits_per_code)
        if bits != int(self.n_bits):
            raise InputError(f"the quantizer's code size ({q.M} x {q.n_bits_per_code} bits = {bits} bits) "
                             f"does not match n_bits={self.n_bits}")
        return clone(q)

    def _new_quantizer(self, rng: np.random.Generator, refresh: bool) -> Quantizer:
        q = self._quantizer_template()
        changes = {"random_state": seed_from(rng), "max_train": None}
        if refresh:
            changes.update({k: v for k, v in _REFRESH_ITERS.items() if k in q.get_params()})
        return q.set_params(**changes)

    def _build_network(self, in_dim: int) -> torch.nn.Module:
        from ..nn import L2Normalize

        network = self._backbone(in_dim, int(self.dim))
        return torch.nn.Sequential(network, L2Normalize()) if self.normalize else network

    def _new_loss(self, n_classes: int) -> torch.nn.Module:
        from ..nn import build_loss

        return build_loss(self.loss, int(self.dim), n_classes, float(self.margin),
                          float(self.scale) if self.normalize else None)

    def fit(self, X, y=None) -> "GSLQuantizer":
        """Train the network and the quantizer on rows ``X`` (n, d) with class labels ``y`` (n,)."""
        from ..nn import GradientSnapping
        from ..nn.snapping import Codebook

        self._check_params()
        setup = self._setup_fit(X, y, self._new_loss)
        X, rng, split = setup.X, setup.rng, setup.split
        if self.init is not None:
            self._warm_start(setup.network, setup.loss_fn, X.shape[1], setup.classes)
        rows = split.train_idx
        if self.max_train is not None and len(rows) > self.max_train:
            rows = np.sort(rng.choice(rows, int(self.max_train), replace=False))
        sample = X[rows]
        start, every = int(self.quant_start), int(self.refresh_every)
        fresh: dict = {}       # the quantizer last fitted by the validator, on the current network

        def refit():
            return self._new_quantizer(rng, refresh=True).fit(self.embed(sample))

        def codebook_at(state):
            if self.quantization == "none" or state.epoch < start:
                return None
            if (state.epoch - start) % every == 0:
                q = fresh.pop("quantizer", None) or refit()
                if log.isEnabledFor(logging.INFO):
                    log.info("epoch %d: codebook refitted, quantization error %.4f", state.epoch + 1,
                             q.quantization_error(self.embed(sample[:5000])))
                return Codebook.from_quantizer(q, torch.device(self.device))
            return state.codebook

        def validate(state):
            if self.quantization != "none" and state.epoch < start:
                return None
            q = fresh["quantizer"] = refit()
            return split.score_euclidean(self.embed(split.queries), q.decode(q.encode(self.embed(split.database))))

        snap_layer = GradientSnapping(self.alpha, self.n_neighbors, self.snap) if self.quantization == "gsl" else None
        self._fit_network(setup, validate=validate, snap_layer=snap_layer, quant_weight=float(self.quant_weight),
                          codebook_at=codebook_at)
        self.loss_ = setup.loss_fn
        self.quantizer_ = self._new_quantizer(rng, refresh=False).fit(self.embed(sample))
        return self

    def _warm_start(self, network, loss_fn, in_dim: int, classes) -> None:
        init = self.init
        if not isinstance(init, GSLQuantizer) or getattr(init, "network_", None) is None:
            raise InputError("init must be a fitted GSLQuantizer")
        same = ("backbone", "dim", "hidden", "image_shape", "normalize")
        if init.n_features_in_ != in_dim or any(
                _plain(getattr(init, k)) != _plain(getattr(self, k)) for k in same):
            raise InputError(f"init's network does not match this one (input dimension and {', '.join(same)} "
                             "must be equal)")
        network.load_state_dict(init.network_.state_dict())
        head = getattr(init, "loss_", None)
        if init.loss == self.loss and head is not None and np.array_equal(init.classes_, classes):
            loss_fn.load_state_dict(head.state_dict())

    # --- the network --------------------------------------------------------------------------
    def embed(self, X, batch_size: int = 4096) -> np.ndarray:
        """The network's float representations (n, dim) of input rows ``X`` (n, d)."""
        check_fitted(self, "network_")
        return self._outputs(X, batch_size)

    @property
    def representation_dim_(self) -> int:
        check_fitted(self, "quantizer_")
        return int(self.quantizer_.dim_)

    # --- the Quantizer interface on raw inputs --------------------------------------------------
    def encode(self, X, batch_size: int = 65536) -> np.ndarray:
        """Codes (n, M) uint8 of input rows ``X``: the quantizer's codes of the network's output."""
        check_fitted(self, "quantizer_")
        return self.quantizer_.encode(self.embed(X), batch_size=batch_size)

    def decode(self, codes) -> np.ndarray:
        """Reconstructions (n, dim) float32 of codes, in the representation space."""
        check_fitted(self, "quantizer_")
        return self.quantizer_.decode(codes)

    def adc_tables(self, Q) -> np.ndarray:
        """ADC tables (nq, M, K) of input-row queries ``Q``."""
        check_fitted(self, "quantizer_")
        return self.quantizer_.adc_tables(self.embed(Q, batch_size=4096))

    def db_bias(self, codes) -> np.ndarray:
        check_fitted(self, "quantizer_")
        return self.quantizer_.db_bias(codes)

    def query_bias(self, Q) -> np.ndarray:
        check_fitted(self, "quantizer_")
        Q = self._check_input(Q, "Q")
        if type(self.quantizer_).query_bias is Quantizer.query_bias:
            return np.zeros(len(Q), dtype=np.float32)
        return self.quantizer_.query_bias(self.embed(Q))

    def quantization_error(self, X) -> float:
        """Mean ``||f(x) - q(f(x))||²`` over rows of ``X`` (in the representation space)."""
        check_fitted(self, "quantizer_")
        Z = self.embed(X)
        return float(np.mean(np.sum((Z - self.quantizer_.decode(self.quantizer_.encode(Z))) ** 2, axis=1)))

    # --- persistence ---------------------------------------------------------------------------
    def _get_state(self):
        params, arrays = super()._get_state()
        params["quantizer"] = type(self.quantizer_).__name__.lower()
        q_params, q_arrays = self.quantizer_._get_state()
        params["quantizer_class_"] = type(self.quantizer_).__name__
        params["quantizer_params_"] = q_params
        arrays.update({f"quantizer.{k}": v for k, v in q_arrays.items()})
        # The classifier head (classification loss) lets a loaded model warm-start another.
        arrays.update({f"loss.{k}": v.detach().cpu().numpy() for k, v in self.loss_.state_dict().items()})
        return params, arrays

    @classmethod
    def _from_state(cls, params, arrays):
        from ..nn.loading import load_checked_weights

        params = dict(params)
        q_name = params.pop("quantizer_class_", None)
        q_params = params.pop("quantizer_params_", None)
        if q_name not in ("PQ", "OPQ", "RQ") or not isinstance(q_params, dict):
            raise FormatError(f"the inner quantizer of a GSLQuantizer file must be a PQ, OPQ or RQ, got {q_name!r}")
        obj = super()._from_state(params, arrays)
        with as_format_errors("GSLQuantizer parameters"):
            obj._check_params(check_device=False)
        if obj.quantizer != q_name.lower():
            raise FormatError(f"the inner quantizer is a {q_name} but the parameters say {obj.quantizer!r}")
        q = persist.class_named(q_name)._from_state(q_params, {k[len("quantizer."):]: v for k, v in arrays.items()
                                                                if k.startswith("quantizer.")})
        if q.n_features_in_ != obj.dim or q.M * q.n_bits_per_code != obj.n_bits:
            raise FormatError(f"the inner {q_name} ({q.n_features_in_}-d, {q.M}x{q.n_bits_per_code} bits) does not "
                              f"fit the representation ({obj.dim}-d, {obj.n_bits} bits)")
        obj.quantizer_ = q
        obj.loss_ = load_checked_weights(lambda: obj._new_loss(len(obj.classes_)),
                                         {k[len("loss."):]: v for k, v in arrays.items() if k.startswith("loss.")},
                                         "GSLQuantizer loss head")
        return obj


def _plain(value):
    """Tuples and lists compare equal (parameters come back from JSON as lists)."""
    return list(value) if isinstance(value, (tuple, list)) else value
