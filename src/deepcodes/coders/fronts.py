"""Fronts: learned maps from input vectors to the space an inverted index quantizes.

A front is fitted like a coder (``fit(X, y=None, *, progress=False)``) and maps rows with
``transform(X) -> (n, p) float32``; ``output_dim(d)`` gives p before fitting. The inverted indexes
(IVF-ADC, VLQ-ADC) take one as ``front=`` and fit it in their ``train`` when it is unfitted:

* :class:`PCA`: centring and projection on the top principal directions;
* :class:`OPQRotation`: the rotation of an OPQ fitted on the inputs (faiss's "OPQ16,IVF...,PQ16");
* :class:`GSLEmbedding`: a GSLQuantizer's network, the representation trained with its quantizer;
* :class:`CodeLayer`: a binary coder's real-valued code layer (``project``, e.g. UH-BDNN's), before
  its signs are taken.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .. import nested, persist
from ..errors import InputError, NotFittedError
from ..validation import check_int, check_matrix, rng_from
from .base import Coder, fit_with_progress, is_fitted
from .itq import pca
from .pq import OPQ, subsample


def _check_fits(n_components: int, d: int, what: str) -> int:
    n_components = check_int(n_components, what, low=1)
    if n_components > d:
        raise InputError(f"{what}={n_components} exceeds the input dimension {d}")
    return n_components


@persist.register
class PCA(TransformerMixin, Coder):
    """Principal component projection: ``(X - mean_) @ components_`` (n, n_components) float32.

    Parameters
    ----------
    n_components : output dimension p, at most the input dimension.
    max_train : fit on at most this many rows (a seeded sample); None uses them all.
    random_state : seed or numpy Generator for that sample.

    Attributes
    ----------
    mean_ : (d,) float32.
    components_ : (d, p) float32, the covariance eigenvectors, largest eigenvalue first.
    """

    _learned = ("mean_", "components_")

    def __init__(self, n_components: int = 64, max_train: int | None = None, random_state=None):
        self.n_components = n_components
        self.max_train = max_train
        self.random_state = random_state

    def output_dim(self, d: int) -> int:
        """p, for d-dimensional inputs."""
        return _check_fits(self.n_components, d, "n_components")

    def _check_params(self) -> None:
        check_int(self.n_components, "n_components", low=1)
        check_int(self.max_train, "max_train", low=2, allow_none=True)

    def _state_shapes(self) -> dict[str, tuple]:
        d = self.n_features_in_
        return {"mean_": ((d,), np.float32), "components_": ((d, self.output_dim(d)), np.float32)}

    def fit(self, X, y=None, *, progress: bool = False) -> "PCA":
        """Learn the mean and principal directions of ``X`` (n, d), n >= 2. Returns self."""
        X = check_matrix(X)
        p = self.output_dim(X.shape[1])
        if X.shape[0] < 2:
            raise InputError("PCA needs at least 2 training rows")
        sample = subsample(X, None if self.max_train is None else check_int(self.max_train, "max_train", low=2),
                           rng_from(self.random_state))
        mean, components = pca(sample, p)
        self.n_features_in_ = X.shape[1]
        self.mean_ = mean.astype(np.float32)
        self.components_ = np.ascontiguousarray(components, dtype=np.float32)
        return self

    def transform(self, X) -> np.ndarray:
        """Projections (n, n_components) float32 of ``X`` (n, d)."""
        X = self._check_input(X)
        return ((X - self.mean_) @ self.components_).astype(np.float32, copy=False)


@persist.register
class OPQRotation(TransformerMixin, Coder):
    """The orthogonal rotation of an OPQ fitted on the inputs: ``transform(X) = pad(X) @ rotation_``
    (n, d_pad), d_pad the next multiple of M. A product quantizer with M sub-quantizers (here the
    residual PQ of an inverted index) then sees dimensions balanced across its sub-spaces.

    Parameters are :class:`~deepcodes.coders.pq.OPQ`'s.

    Attributes
    ----------
    rotation_ : (d_pad, d_pad) float32 orthogonal.
    """

    _learned = ("rotation_",)

    def __init__(self, M: int = 8, n_bits_per_code: int = 8, n_iter: int = 25, n_outer: int = 10,
                 n_iter_inner: int = 4, max_train: int | None = None, random_state=None):
        self.M = M
        self.n_bits_per_code = n_bits_per_code
        self.n_iter = n_iter
        self.n_outer = n_outer
        self.n_iter_inner = n_iter_inner
        self.max_train = max_train
        self.random_state = random_state

    def output_dim(self, d: int) -> int:
        """d_pad, for d-dimensional inputs."""
        M = _check_fits(self.M, d, "M (number of sub-quantizers)")
        return -(-int(d) // M) * M

    def _check_params(self) -> None:
        OPQ(**self.get_params())._check_params()

    def _state_shapes(self) -> dict[str, tuple]:
        d_pad = self.output_dim(self.n_features_in_)
        return {"rotation_": ((d_pad, d_pad), np.float32)}

    def fit(self, X, y=None, *, progress: bool = False) -> "OPQRotation":
        """Fit an OPQ on ``X`` (n, d) and keep its rotation. Returns self."""
        opq = OPQ(**self.get_params()).fit(X, progress=progress)
        self.n_features_in_ = opq.n_features_in_
        self.rotation_ = opq.rotation_
        return self

    def transform(self, X) -> np.ndarray:
        """Rotated rows (n, d_pad) float32 of ``X`` (n, d)."""
        X = self._check_input(X)
        # the zero padding meets the last rows of the rotation only: pad(X) @ R = X @ R[:d]
        return X @ self.rotation_[:X.shape[1]]


class _ModelFront(TransformerMixin, BaseEstimator):
    """A front that is one real-valued method (``_method``) of another model, fitted here or before."""

    _method = ""

    def __init__(self, model):
        self.model = model

    @property
    def n_features_in_(self):
        """The model's input dimension (None until it is fitted)."""
        return getattr(self.model, "n_features_in_", None)

    def fit(self, X, y=None, *, progress: bool = False):
        """Fit the model on ``X`` (n, d), with labels ``y`` when it is supervised. Returns self."""
        fit_with_progress(self.model, X, y, progress)
        return self

    def transform(self, X) -> np.ndarray:
        """The model's real-valued output (n, output_dim) float32 for rows ``X`` (n, d)."""
        if not is_fitted(self.model):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit() first")
        X = check_matrix(X, dim=self.model.n_features_in_)
        return np.asarray(getattr(self.model, self._method)(X), dtype=np.float32)

    def _get_state(self):
        if not is_fitted(self.model):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit() first")
        doc, arrays = nested.part_state(self.model, "model")
        return {"model": doc}, arrays

    @classmethod
    def _from_state(cls, params, arrays):
        return cls(nested.part_from_state(params.get("model"), arrays, "model"))


@persist.register
class GSLEmbedding(_ModelFront):
    """The network of a :class:`~deepcodes.coders.gsl.GSLQuantizer`: ``transform(X) = model.embed(X)``
    (n, model.dim), the representation GSL trains jointly with its quantizer (supervised: ``fit``
    needs labels).

    Parameters
    ----------
    model : a GSLQuantizer, fitted or not.
    """

    _method = "embed"

    def __init__(self, model):
        if not callable(getattr(model, "embed", None)):
            raise InputError(f"GSLEmbedding needs a GSLQuantizer, got {type(model).__name__}")
        super().__init__(model)

    def output_dim(self, d: int) -> int:
        return check_int(self.model.dim, "dim", low=1)


@persist.register
class CodeLayer(_ModelFront):
    """The real-valued code layer of a binary coder: ``transform(X) = model.project(X)``
    (n, model.n_bits), whose signs would be the bits (UH-BDNN's and SH-BDNN's linear last layer,
    ITQ's rotated projection).

    Parameters
    ----------
    model : a BinaryCoder, fitted or not.
    """

    _method = "project"

    def __init__(self, model):
        if getattr(model, "code_kind", None) != "binary":
            raise InputError(f"CodeLayer needs a binary coder (UH-BDNN, SH-BDNN, ITQ, ...), got {type(model).__name__}")
        super().__init__(model)

    def output_dim(self, d: int) -> int:
        return check_int(self.model.n_bits, "n_bits", low=1)
