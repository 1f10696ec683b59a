"""What every coder trained by the Adam loop shares (DSH, DNNH, SuBiC, GSL): a backbone network
(``deepcodes.nn.backbones``), its parameter and input checks, the early-stopping split of the
training set (:class:`~deepcodes.coders.early_stopping.ValidationSplit`), training through the one
loop :func:`deepcodes.nn.train_network`, batched inference on the training device, and saving the
network's weights as plain arrays.

A coder mixes :class:`NetworkCoder` into a ``BinaryCoder`` or ``Quantizer``, defines
``_build_network(in_dim)`` (its backbone plus its coding layer, unseeded) and a loss, and fits with
:meth:`NetworkCoder._fit_coder` (GSL, whose loop also refits a codebook, with the parts it uses).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import FormatError, InputError
from ..validation import (as_format_errors, check_int, check_labels, check_matrix, check_state_array, check_state_keys,
                          rng_from, seed_from)
from .early_stopping import ValidationSplit

NETWORK_DOC = """
    backbone : "mlp" (feature vectors) or "cnn" (images as rows, HWC order).
    hidden : hidden layer widths of the MLP; the CNN uses the last one for its hidden layer.
    image_shape : (H, W, C) for the CNN; None infers 28x28x1 from 784 and 32x32x3 from 3072 values.
    epochs : training epochs (Adam); the epoch with the best validation mAP is kept.
    batch_size, lr, weight_decay : Adam's settings; ``lr_schedule`` "cosine" decays lr to 0 along
        a half cosine over all steps, "constant" keeps it.
    augment : random translations (up to 4 pixels) and horizontal flips of the training images
        (CNN only).
    validation_size : training points held out as validation queries for early stopping: an int,
        a fraction in (0, 1), 0 (no validation: keep the last epoch) or None (min(1000, 10%)).
    validation_database : at most this many of the other training points form the validation
        database (they still train).
    patience : stop after this many epochs without a better validation mAP (None: train all epochs).
    random_state : seed or numpy Generator (split, network initialisation and batches derive from it).
    device : torch device for training and encoding ("cpu", "cuda", ...).
    verbose : a progress bar per epoch.
"""
# The end of the docstring of a supervised coder trained by this loop.
SUPERVISED_DOC = """
    ``fit(X, y)`` takes integer class labels y (n,) of at least two classes.

    Attributes
    ----------
    network_ : the trained network (torch module, eval mode); classes_ : the training classes.
    history_ : one dict per epoch (losses, validation mAP, seconds); best_epoch_ : the epoch kept,
    validation_score_ : its validation mAP.
    """


def torch_device(device) -> torch.device:
    """``device`` as a usable torch device, or InputError."""
    if device is not None and not isinstance(device, (str, torch.device)):
        raise InputError(f"device must be a string such as 'cpu' or 'cuda', got {device!r}")
    try:
        dev = torch.device(device)
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError, TypeError) as exc:
        raise InputError(f"device {device!r} is not usable here (set_params(device='cpu') to run on the CPU): "
                         f"{' '.join(str(exc).split())}") from None
    return dev


def check_number(value, name: str, *, positive: bool = False) -> float:
    """A finite real number >= 0 (> 0 when ``positive``), or InputError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0 \
            or (positive and value == 0):
        raise InputError(f"{name} must be a finite number {'>' if positive else '>='} 0, got {value!r}")
    return float(value)


def as_tensor(X: np.ndarray, device) -> torch.Tensor:
    """A float32 tensor of ``X`` on ``device`` (read-only arrays, as the protocols give, are copied)."""
    return torch.from_numpy(X if X.flags.writeable else X.copy()).to(device)


@dataclass
class FitSetup:
    """What a fit starts from: the checked rows, class indices and classes, the random generator,
    the validation split, the torch generator of initialisation and batches, the seeded network
    and loss."""

    X: np.ndarray
    y_idx: np.ndarray
    classes: np.ndarray
    rng: np.random.Generator
    split: ValidationSplit
    generator: torch.Generator
    network: torch.nn.Module
    loss_fn: torch.nn.Module


class NetworkCoder:
    """Mixin of the Adam-trained coders: see the module docstring. The class using it sets the
    parameters named in :data:`NETWORK_DOC` in its ``__init__`` (``self._keep(locals())``)."""

    # The smallest training set the coders accept (the validation split takes its share of it).
    _min_rows = 20

    def _keep(self, params: dict) -> None:
        """Set every ``__init__`` argument in ``params`` (its ``locals()``) as an attribute of the
        same name, unchanged, as scikit-learn estimators do."""
        for name, value in params.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)

    # --- checks ------------------------------------------------------------------------------
    def _check_network_params(self, check_device: bool = True) -> tuple[int, ...]:
        """Check the shared parameters (the device too, with ``check_device``: a loaded model
        trained on a GPU is still checked without one); returns the hidden widths."""
        from ..nn import BACKBONES
        from ..nn.trainer import LR_SCHEDULES

        if self.backbone not in BACKBONES:
            raise InputError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        try:
            hidden = tuple(check_int(h, "hidden width", low=1) for h in self.hidden)
        except TypeError:
            raise InputError(f"hidden must be a sequence of layer widths, got {self.hidden!r}") from None
        if self.backbone == "cnn" and not hidden:
            raise InputError("the CNN backbone needs one hidden width")
        check_int(self.epochs, "epochs", low=0)
        check_int(self.batch_size, "batch_size", low=2)
        check_number(self.lr, "lr", positive=True)
        check_number(self.weight_decay, "weight_decay")
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not isinstance(self.augment, (bool, np.bool_)):
            raise InputError(f"augment must be True or False, got {self.augment!r}")
        if self.augment and self.backbone != "cnn":
            raise InputError("augment=True needs images: use backbone='cnn'")
        if self.patience is not None:
            check_int(self.patience, "patience", low=1)
        if check_device:
            torch_device(self.device)
        elif self.device is not None and not isinstance(self.device, (str, torch.device)):
            raise InputError(f"device must be a string such as 'cpu' or 'cuda', got {self.device!r}")
        return hidden

    def _check_training_data(self, X, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Checked rows (n, d) float32, classes (C,) and class indices (n,) int64 of ``(X, y)``."""
        X = check_matrix(X)
        if y is None:
            raise InputError(f"labels are missing: {type(self).__name__} is supervised, call fit(X, y)")
        y = check_labels(y, X.shape[0], min_classes=2)
        if X.shape[0] < self._min_rows:
            raise InputError(f"{type(self).__name__} needs at least {self._min_rows} training rows, got {X.shape[0]}")
        classes, y_idx = np.unique(y, return_inverse=True)
        return X, classes, y_idx.astype(np.int64)

    # --- the network -------------------------------------------------------------------------
    def _backbone(self, in_dim: int, out_dim: int):
        """An unseeded backbone ``in_dim`` -> ``out_dim`` with this coder's settings."""
        from ..nn import build_backbone

        return build_backbone(self.backbone, in_dim, int(out_dim), hidden=tuple(int(h) for h in self.hidden),
                              image_shape=self.image_shape)

    def _build_network(self, in_dim: int) -> torch.nn.Module:
        """The whole network (backbone and coding layer) for ``in_dim``-dimensional rows."""
        raise NotImplementedError

    def _validation_split(self, X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> ValidationSplit:
        """The early-stopping split, drawn from its own seed (``validation_seed_``), which a warm
        start (``init``) takes from its init so that the points init held out stay unseen."""
        init = getattr(self, "init", None)
        seed = getattr(init, "validation_seed_", None) if init is not None else None
        self.validation_seed_ = int(seed) if seed is not None else seed_from(rng)
        return ValidationSplit(X, y, size=self.validation_size, database_size=self.validation_database,
                               rng=np.random.default_rng(self.validation_seed_), what=type(self).__name__)

    def _setup_fit(self, X, y, loss_for) -> FitSetup:
        """Check the data, draw the validation split, build and seed the network and
        ``loss_for(n_classes)``; sets ``classes_``."""
        from ..nn.init import reset_parameters

        X, classes, y_idx = self._check_training_data(X, y)
        rng = rng_from(self.random_state)
        split = self._validation_split(X, y_idx, rng)
        generator = torch.Generator().manual_seed(seed_from(rng))
        network = reset_parameters(self._build_network(X.shape[1]), generator)
        loss_fn = reset_parameters(loss_for(len(classes)), generator)
        self.classes_ = classes
        return FitSetup(X, y_idx, classes, rng, split, generator, network, loss_fn)

    def _fit_coder(self, X, y, loss_for, score):
        """The whole ``fit`` of a coder made of a network and a loss: check the shared parameters,
        set up (:meth:`_setup_fit`) and train with ``score(split)`` (validation mAP) as the
        early-stopping criterion. Returns self."""
        self._check_network_params()
        setup = self._setup_fit(X, y, loss_for)
        self._fit_network(setup, validate=lambda state: score(setup.split))
        return self

    def _fit_network(self, setup: FitSetup, *, validate=None, **loop):
        """Train the setup's network and loss on its split's training rows through
        :func:`deepcodes.nn.train_network` (``loop`` passes its quantization-awareness arguments);
        ``validate(state)`` scores an epoch (None: no early stopping). Sets ``network_`` (eval mode,
        best epoch restored), ``history_``, ``best_epoch_`` and ``validation_score_`` (its validation
        mAP; NaN without validation); returns the loop's TrainState."""
        from ..nn import CropFlip, TrainConfig, image_shape_for, train_network

        network, loss_fn, X, split = setup.network, setup.loss_fn, setup.X, setup.split
        device = torch_device(self.device)
        network.to(device)
        loss_fn.to(device)
        self.network_ = network
        self.n_features_in_ = X.shape[1]
        rows = split.train_idx
        Xt = as_tensor(X[rows], device)
        yt = torch.from_numpy(setup.y_idx[rows]).to(device)
        augment = CropFlip(image_shape_for(X.shape[1], self.image_shape)) if self.augment else None
        config = TrainConfig(epochs=int(self.epochs), batch_size=int(self.batch_size), lr=float(self.lr),
                             weight_decay=float(self.weight_decay), lr_schedule=self.lr_schedule,
                             patience=self.patience, progress=bool(self.verbose))
        state = train_network(network, loss_fn, Xt, yt, config, generator=setup.generator,
                              validate=validate if split else None, augment=augment, **loop)
        self.history_ = state.history_dicts()
        self.best_epoch_ = state.best_epoch if state.best_weights is not None else len(state.history)
        self.validation_score_ = state.best_score if state.best_weights is not None else float("nan")
        return state

    @torch.no_grad()
    def _outputs(self, X, batch_size: int = 4096) -> np.ndarray:
        """The network's outputs (n, out) float32 for input rows ``X`` (n, d), checked."""
        X = check_matrix(X, dim=self.n_features_in_)
        device = torch_device(self.device)
        if next(self.network_.parameters()).device != device:
            self.network_.to(device)
        self.network_.eval()
        out = [self.network_(as_tensor(X[s:s + batch_size], device)).cpu()
               for s in range(0, X.shape[0], batch_size)]
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    # --- persistence ---------------------------------------------------------------------------
    def _network_params(self) -> dict:
        """JSON-able constructor parameters (tuples as lists, the device as a string)."""
        params = self.get_params(deep=False)
        params["hidden"] = [int(h) for h in self.hidden]
        params["image_shape"] = None if self.image_shape is None else [int(s) for s in self.image_shape]
        params["device"] = str(self.device)
        if "init" in params:
            params["init"] = None
        if not (self.random_state is None or isinstance(self.random_state, numbers.Integral)):
            params["random_state"] = None
        params["n_features_in_"] = int(self.n_features_in_)
        seed = getattr(self, "validation_seed_", None)
        params["validation_seed_"] = None if seed is None else int(seed)
        return params

    def _network_arrays(self) -> dict[str, np.ndarray]:
        return {f"network.{k}": v.detach().cpu().numpy() for k, v in self.network_.state_dict().items()}

    def _get_state(self):
        arrays = self._network_arrays()
        arrays["classes_"] = np.asarray(self.classes_)
        return self._network_params(), arrays

    @classmethod
    def _from_state(cls, params, arrays):
        obj = cls._network_from_state(params, arrays)
        obj.classes_ = check_state_array(arrays.get("classes_"), "classes_", (None,), np.int64)
        return obj

    @classmethod
    def _network_from_state(cls, params: dict, arrays: dict):
        """An instance with ``params`` whose ``network_`` holds the saved weights, every parameter
        and weight checked first (a file may be hostile)."""
        from ..nn.loading import load_checked_weights

        params = dict(params)
        n_features = params.pop("n_features_in_", None)
        validation_seed = params.pop("validation_seed_", None)
        check_state_keys(cls.__name__, params, cls._get_param_names(), "parameters")
        for name in ("hidden", "image_shape"):
            if isinstance(params.get(name), list):
                params[name] = tuple(params[name])
        obj = cls(**params)
        with as_format_errors(f"{cls.__name__} parameters"):
            obj.n_features_in_ = check_int(n_features, "n_features_in_", low=1)
            obj.validation_seed_ = check_int(validation_seed, "validation_seed_", low=0, allow_none=True)
            obj._check_network_params(check_device=False)

        def build():
            with as_format_errors(f"{cls.__name__} parameters"):
                return obj._build_network(obj.n_features_in_)

        weights = {k[len("network."):]: v for k, v in arrays.items() if k.startswith("network.")}
        obj.network_ = load_checked_weights(build, weights, cls.__name__)
        return obj
