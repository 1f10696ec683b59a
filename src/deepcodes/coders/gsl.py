"""GSL: a deep representation trained jointly with a vector quantizer through the Gradient Snapping
Layer (Liu & Lu, 2016; ALGORITHMS.md section 5), and its baselines on the same training loop."""
from __future__ import annotations

import logging
import numbers

import numpy as np
import torch
from sklearn.base import clone

from .. import persist
from ..errors import FormatError, InputError
from ..validation import (as_format_errors, check_fitted, check_int, check_labels, check_matrix, check_n_bits,
                          check_state_array, check_state_keys, rng_from, seed_from)
from .base import Quantizer
from .pq import OPQ, PQ
from .rq import RQ

log = logging.getLogger(__name__)

QUANTIZERS = {"pq": PQ, "opq": OPQ, "rq": RQ}
QUANTIZATION_MODES = ("gsl", "loss", "none")
# Codebook refreshes during training are cheaper fits than the final one: they are redone often
# and only need to track the moving representation.
_REFRESH_ITERS = {"n_iter": 10, "n_outer": 3}


@persist.register
class GSLQuantizer(Quantizer):
    """A network f (MLP or small CNN) followed by a vector quantizer q (PQ, OPQ or RQ) on its output.

    Training alternates (a) fitting q on the current representations of a training sample and
    (b) training f through a :class:`~deepcodes.nn.GradientSnapping` layer with q fixed
    (``quantization="gsl"``). The same loop gives the baselines: ``quantization="none"`` (q fitted
    once after training, post hoc) and ``quantization="loss"`` (``quant_weight * ||z - q(z)||²``
    added to the loss, DQN-style). ``quant_weight`` > 0 with ``"gsl"`` combines both.

    Codes, ``decode`` and ADC search are q's, applied to f's output, so ``encode``, ``adc_tables``
    and ``query_bias`` take raw input rows; ``decode`` returns reconstructions of representations.

    Parameters
    ----------
    n_bits : code length, a multiple of 8: ``n_bits / 8`` sub-quantizers (stages) of 256 codewords.
    quantizer : "pq", "opq", "rq" or an unfitted PQ/OPQ/RQ whose code size is ``n_bits``.
    backbone : "mlp" (feature vectors) or "cnn" (images as rows, HWC order).
    dim : representation dimension.
    hidden : MLP hidden widths; the CNN uses the last one for its hidden layer.
    image_shape : (H, W, C) for the CNN; None infers 28x28x1 from 784 and 32x32x3 from 3072 values.
    loss : "classification" (softmax on the representation), "contrastive" or "triplet".
    margin : margin of the contrastive and triplet losses.
    quantization : "gsl", "loss" or "none" (see above).
    alpha, n_neighbors, snap : the snapping layer's mixing weight, candidates and mode.
    quant_weight : weight λ of the quantization loss.
    epochs : training epochs; quantization awareness starts at epoch ``quant_start`` (0-based) and
        the codebook is refitted every ``refresh_every`` epochs from then on.
    batch_size, lr, weight_decay : Adam's settings.
    max_train : the codebook is fitted on at most this many training representations.
    init : a fitted GSLQuantizer with the same backbone whose network (and classifier head) starts
        training here (for schedules that share a warm-up; ``epochs=0`` only refits q).
    random_state : seed or numpy Generator (network init, batches and k-means all derive from it).
    device : torch device for training and encoding.
    verbose : show a progress bar per epoch.

    Attributes
    ----------
    network_ : the trained backbone (torch module, in eval mode).
    quantizer_ : the fitted inner PQ/OPQ/RQ on the representations.
    classes_ : the training labels' classes.
    history_ : one dict per epoch (loss, quantization error, fraction of gradients snapped).
    """

    _learned = ("quantizer_",)
    # A plain class attribute shadows Quantizer.n_bits (a read-only property): here it is a parameter.
    n_bits = 32

    def __init__(self, n_bits: int = 32, quantizer="pq", backbone: str = "mlp", dim: int = 64,
                 hidden=(256,), image_shape=None, loss: str = "classification", margin: float = 1.0,
                 quantization: str = "gsl", alpha: float = 0.5, n_neighbors: int = 16,
                 snap: str = "direction", quant_weight: float = 0.0, epochs: int = 10,
                 quant_start: int = 0, refresh_every: int = 1, batch_size: int = 128, lr: float = 1e-3,
                 weight_decay: float = 0.0, max_train: int | None = 20_000, init=None,
                 random_state=None, device="cpu", verbose: bool = False):
        self.n_bits = n_bits
        self.quantizer = quantizer
        self.backbone = backbone
        self.dim = dim
        self.hidden = hidden
        self.image_shape = image_shape
        self.loss = loss
        self.margin = margin
        self.quantization = quantization
        self.alpha = alpha
        self.n_neighbors = n_neighbors
        self.snap = snap
        self.quant_weight = quant_weight
        self.epochs = epochs
        self.quant_start = quant_start
        self.refresh_every = refresh_every
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_train = max_train
        self.init = init
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

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
        """Raise InputError unless the parameters are valid (and, with ``check_device``, the device
        usable here: a loaded model trained on a GPU is still checked without one)."""
        from ..nn import BACKBONES, LOSSES
        from ..nn.snapping import check_snap_params

        check_n_bits(self.n_bits)
        self._quantizer_template()
        if self.backbone not in BACKBONES:
            raise InputError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.loss not in LOSSES:
            raise InputError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.quantization not in QUANTIZATION_MODES:
            raise InputError(f"quantization must be one of {QUANTIZATION_MODES}, got {self.quantization!r}")
        check_int(self.dim, "dim", low=1)
        try:
            hidden = tuple(check_int(h, "hidden width", low=1) for h in self.hidden)
        except TypeError:
            raise InputError(f"hidden must be a sequence of layer widths, got {self.hidden!r}") from None
        if self.backbone == "cnn" and not hidden:
            raise InputError("the CNN backbone needs one hidden width")
        check_snap_params(self.alpha, self.n_neighbors, self.snap)
        for name in ("margin", "quant_weight", "lr", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
                raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr == 0:
            raise InputError("lr must be > 0")
        epochs = check_int(self.epochs, "epochs", low=0)
        start = check_int(self.quant_start, "quant_start", low=0)
        check_int(self.refresh_every, "refresh_every", low=1)
        check_int(self.batch_size, "batch_size", low=2)
        if self.max_train is not None:
            check_int(self.max_train, "max_train", low=256)
        if self.quantization != "none" and start >= epochs:
            raise InputError(f"quantization={self.quantization!r} needs quant_start ({start}) < epochs ({epochs})")
        if self.quantization == "loss" and self.quant_weight == 0:
            raise InputError("quantization='loss' needs quant_weight > 0")
        if self.device is not None and not isinstance(self.device, (str, torch.device)):
            raise InputError(f"device must be a string such as 'cpu' or 'cuda', got {self.device!r}")
        if check_device:
            self._check_device()

    def _check_device(self) -> None:
        try:
            torch.empty(0, device=self.device)
        except (RuntimeError, AssertionError) as exc:
            raise InputError(f"device {self.device!r} is not usable here (set_params(device='cpu') to run on "
                             f"the CPU): {' '.join(str(exc).split())}") from None

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

    def fit(self, X, y=None) -> "GSLQuantizer":
        """Train the network and the quantizer on rows ``X`` (n, d) with class labels ``y`` (n,)."""
        from ..nn import GradientSnapping, build_backbone, build_loss, train_network
        from ..nn.init import reset_parameters
        from ..nn.snapping import Codebook

        self._check_params()
        X = check_matrix(X)
        if y is None:
            raise InputError(f"labels are missing: the {self.loss} loss is supervised, call fit(X, y)")
        y = check_labels(y, X.shape[0], min_classes=2)
        if X.shape[0] < 256:
            raise InputError(f"GSLQuantizer needs at least 256 training rows (one per codeword), got {X.shape[0]}")
        hidden = tuple(int(h) for h in self.hidden)
        rng = rng_from(self.random_state)
        gen = torch.Generator().manual_seed(seed_from(rng))
        classes, y_idx = np.unique(y, return_inverse=True)
        network = reset_parameters(build_backbone(self.backbone, X.shape[1], int(self.dim), hidden=hidden,
                                                  image_shape=self.image_shape), gen)
        loss_fn = reset_parameters(build_loss(self.loss, int(self.dim), len(classes), float(self.margin)), gen)
        if self.init is not None:
            self._warm_start(network, loss_fn, X.shape[1], classes)
        device = torch.device(self.device)
        network.to(device)
        loss_fn.to(device)
        Xt = _tensor(X, device)
        yt = torch.from_numpy(y_idx.astype(np.int64)).to(device)
        sample = np.arange(X.shape[0])
        if self.max_train is not None and X.shape[0] > self.max_train:
            sample = np.sort(rng.choice(X.shape[0], int(self.max_train), replace=False))
        sample_t = torch.from_numpy(sample).to(device)

        self.n_features_in_ = X.shape[1]
        self.network_ = network
        self.classes_ = classes
        state = {"codebook": None}
        start, every = int(self.quant_start), int(self.refresh_every)

        def codebook_at(epoch: int):
            if self.quantization == "none" or epoch < start:
                return None
            if (epoch - start) % every == 0:
                Z = self._embed_tensor(Xt[sample_t])
                q = self._new_quantizer(rng, refresh=True).fit(Z)
                state["codebook"] = Codebook.from_quantizer(q, device)
                if log.isEnabledFor(logging.INFO):
                    log.info("epoch %d: codebook refitted, quantization error %.4f", epoch + 1,
                             q.quantization_error(Z[:5000]))
            return state["codebook"]

        snap_layer = None
        if self.quantization == "gsl":
            snap_layer = GradientSnapping(self.alpha, self.n_neighbors, self.snap)
        self.history_ = train_network(
            network, loss_fn, Xt, yt, epochs=int(self.epochs), batch_size=int(self.batch_size), lr=float(self.lr),
            weight_decay=float(self.weight_decay), generator=gen, snap_layer=snap_layer,
            quant_weight=float(self.quant_weight), codebook_at=codebook_at, progress=bool(self.verbose))
        self.loss_ = loss_fn
        Z = self._embed_tensor(Xt[sample_t])
        self.quantizer_ = self._new_quantizer(rng, refresh=False).fit(Z)
        return self

    def _warm_start(self, network, loss_fn, in_dim: int, classes) -> None:
        init = self.init
        if not isinstance(init, GSLQuantizer) or getattr(init, "network_", None) is None:
            raise InputError("init must be a fitted GSLQuantizer")
        same = ("backbone", "dim", "hidden", "image_shape")
        if init.n_features_in_ != in_dim or any(
                _plain(getattr(init, k)) != _plain(getattr(self, k)) for k in same):
            raise InputError(f"init's network does not match this one (input dimension and {', '.join(same)} "
                             "must be equal)")
        network.load_state_dict(init.network_.state_dict())
        head = getattr(init, "loss_", None)
        if init.loss == self.loss and head is not None and np.array_equal(init.classes_, classes):
            loss_fn.load_state_dict(head.state_dict())

    # --- the network --------------------------------------------------------------------------
    @torch.no_grad()
    def _embed_tensor(self, X: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
        self.network_.eval()
        out = [self.network_(X[s:s + batch_size]).cpu() for s in range(0, X.shape[0], batch_size)]
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    def embed(self, X, batch_size: int = 4096) -> np.ndarray:
        """The network's float representations (n, dim) of input rows ``X`` (n, d)."""
        check_fitted(self, "network_")
        X = check_matrix(X, dim=self.n_features_in_)
        batch_size = check_int(batch_size, "batch_size", low=1)
        self._check_device()
        device = torch.device(self.device)
        if next(self.network_.parameters()).device != device:
            self.network_.to(device)
        return self._embed_tensor(_tensor(X, device), batch_size)

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
        if type(self.quantizer_).query_bias is Quantizer.query_bias:
            return np.zeros(len(check_matrix(Q, "queries", dim=self.n_features_in_)), dtype=np.float32)
        return self.quantizer_.query_bias(self.embed(Q))

    def quantization_error(self, X) -> float:
        """Mean ``||f(x) - q(f(x))||²`` over rows of ``X`` (in the representation space)."""
        check_fitted(self, "quantizer_")
        Z = self.embed(X)
        return float(np.mean(np.sum((Z - self.quantizer_.decode(self.quantizer_.encode(Z))) ** 2, axis=1)))

    # --- persistence ---------------------------------------------------------------------------
    def _get_state(self):
        params = self.get_params(deep=False)
        params["init"] = None
        params["hidden"] = [int(h) for h in self.hidden]
        params["image_shape"] = None if self.image_shape is None else [int(s) for s in self.image_shape]
        params["quantizer"] = type(self.quantizer_).__name__.lower()
        params["device"] = str(self.device)
        if not (self.random_state is None or isinstance(self.random_state, numbers.Integral)):
            params["random_state"] = None
        q_params, q_arrays = self.quantizer_._get_state()
        params["n_features_in_"] = int(self.n_features_in_)
        params["quantizer_class_"] = type(self.quantizer_).__name__
        params["quantizer_params_"] = q_params
        arrays = {f"network.{k}": v.detach().cpu().numpy() for k, v in self.network_.state_dict().items()}
        arrays.update({f"quantizer.{k}": v for k, v in q_arrays.items()})
        arrays["classes_"] = np.asarray(self.classes_)
        return params, arrays

    @classmethod
    def _from_state(cls, params, arrays):
        params = dict(params)
        n_features = params.pop("n_features_in_", None)
        q_name = params.pop("quantizer_class_", None)
        q_params = params.pop("quantizer_params_", None)
        if q_name not in ("PQ", "OPQ", "RQ") or not isinstance(q_params, dict):
            raise FormatError(f"the inner quantizer of a GSLQuantizer file must be a PQ, OPQ or RQ, got {q_name!r}")
        check_state_keys(cls.__name__, params, cls._get_param_names(), "parameters")
        for name in ("hidden", "image_shape"):
            if isinstance(params[name], list):
                params[name] = tuple(params[name])
        obj = cls(**params)
        with as_format_errors("GSLQuantizer parameters"):
            obj.n_features_in_ = check_int(n_features, "n_features_in_", low=1)
            obj._check_params(check_device=False)
        if obj.quantizer != q_name.lower():
            raise FormatError(f"the inner quantizer is a {q_name} but the parameters say {obj.quantizer!r}")
        q_arrays = {k[len("quantizer."):]: v for k, v in arrays.items() if k.startswith("quantizer.")}
        obj.quantizer_ = q = persist.class_named(q_name)._from_state(q_params, q_arrays)
        if q.n_features_in_ != obj.dim or q.M * q.n_bits_per_code != obj.n_bits:
            raise FormatError(f"the inner {q_name} ({q.n_features_in_}-d, {q.M}x{q.n_bits_per_code} bits) does not "
                              f"fit the representation ({obj.dim}-d, {obj.n_bits} bits)")
        weights = {k[len("network."):]: v for k, v in arrays.items() if k.startswith("network.")}
        obj.network_ = obj._load_network(weights)
        obj.classes_ = check_state_array(arrays.get("classes_"), "classes_", (None,), np.int64)
        extra = set(arrays) - {"classes_"} - {f"quantizer.{k}" for k in q_arrays} - {f"network.{k}" for k in weights}
        if extra:
            raise FormatError(f"unknown arrays in a GSLQuantizer file: {sorted(extra)}")
        return obj

    def _load_network(self, weights: dict[str, np.ndarray]) -> torch.nn.Module:
        """The backbone the (checked) parameters describe, with the saved ``weights``, after checking
        that every weight has the name, shape and dtype the backbone expects (see
        :func:`~deepcodes.nn.loading.load_checked_weights`)."""
        from ..nn import build_backbone
        from ..nn.loading import load_checked_weights

        n_layers = len(self.hidden) + 1 if self.backbone == "mlp" else 4
        if len(weights) != 2 * n_layers:
            raise FormatError(f"the file holds {len(weights)} network arrays; the {self.backbone} backbone "
                              f"described by its parameters has {2 * n_layers}")

        def build():
            with as_format_errors("GSLQuantizer parameters"):
                return build_backbone(self.backbone, self.n_features_in_, int(self.dim), hidden=self.hidden,
                                      image_shape=self.image_shape)

        return load_checked_weights(build, weights, type(self).__name__)


def _tensor(X: np.ndarray, device) -> torch.Tensor:
    # torch cannot wrap read-only arrays (the protocols' are): copy those.
    return torch.from_numpy(X if X.flags.writeable else X.copy()).to(device)


def _plain(value):
    """Tuples and lists compare equal (parameters come back from JSON as lists)."""
    return list(value) if isinstance(value, (tuple, list)) else value
