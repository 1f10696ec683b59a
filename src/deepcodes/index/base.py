"""What every index shares: a stored code array that grows by ``add``, an optional coder that turns
vectors into codes, and saving/loading (the coder travels inside the index file)."""
from __future__ import annotations

import numpy as np

from .. import persist
from ..errors import FormatError, InputError
from ..validation import as_array, check_codes, check_int


class CodeIndex:
    """Base of indexes over fixed-size codes. Ids are insertion positions 0..ntotal-1."""

    code_dtype = np.uint8

    def __init__(self, coder=None):
        self.coder = coder
        self._chunks: list[np.ndarray] = []
        self._codes = np.empty((0, self.code_size), dtype=self.code_dtype)

    @property
    def code_size(self) -> int:
        raise NotImplementedError

    @property
    def ntotal(self) -> int:
        """Number of codes in the index."""
        return int(self._codes.shape[0] + sum(len(c) for c in self._chunks))

    def __len__(self) -> int:
        return self.ntotal

    @property
    def codes(self) -> np.ndarray:
        """All stored codes (ntotal, code_size), in id order."""
        if self._chunks:
            self._codes = np.concatenate([self._codes, *self._chunks])
            self._chunks = []
        return self._codes

    def _encode(self, X, what: str) -> np.ndarray:
        if self.coder is None:
            raise InputError(f"{type(self).__name__} has no coder: pass codes to {what}_codes(), "
                             f"or build the index with a fitted coder to {what} vectors")
        return self.coder.encode(X)

    def add(self, X, batch_size: int = 65536) -> None:
        """Encode the vectors ``X`` (n, d) with the index's coder, in batches, and add them."""
        if self.coder is None:
            self.add_codes(X)
            return
        batch_size = check_int(batch_size, "batch_size", low=1)
        X = as_array(X, "X")
        if X.ndim != 2:
            self.add_codes(self._encode(X, "add"))
            return
        # every batch is encoded (and checked) before any is added: a refused batch adds nothing
        batches = [self._encode(X[start:start + batch_size], "add") for start in range(0, X.shape[0], batch_size)]
        self.add_codes(np.concatenate(batches) if batches else self._encode(X, "add"))

    def add_codes(self, codes) -> None:
        """Append codes (n, code_size); they get ids ntotal..ntotal+n-1."""
        codes = check_codes(codes, code_size=self.code_size, dtype=self.code_dtype)
        self._check_code_values(codes)
        self._chunks.append(codes)
        self._on_add(codes)

    def _check_code_values(self, codes) -> None:
        """Hook: reject codes the index cannot hold."""

    def _on_add(self, codes) -> None:
        """Hook: per-code side data (e.g. norms) computed when codes arrive."""

    def _check_search(self, k, batch_size):
        check_int(batch_size, "batch_size", low=1)
        if self.ntotal == 0:
            raise InputError("the index is empty: add vectors before searching")
        k = check_int(k, "k", low=1)
        if k > self.ntotal:
            raise InputError(f"k={k} is larger than the database ({self.ntotal} items)")
        return k

    def save(self, path, meta: dict | None = None) -> None:
        """Save the index (and its coder, if any) to ``path`` atomically."""
        persist.save(self, path, meta=meta)

    def _get_state(self):
        params = self._params()
        arrays = {"codes": self.codes}
        if self.coder is not None:
            coder_params, coder_arrays = self.coder._get_state()
            params["coder"] = {"class": type(self.coder).__name__, "params": coder_params}
            arrays.update({f"coder.{k}": v for k, v in coder_arrays.items()})
        return params, arrays

    @classmethod
    def _from_state(cls, params, arrays):
        params = dict(params)
        coder_doc = params.pop("coder", None)
        coder = None
        if coder_doc is not None:
            coder_cls = persist.class_named(coder_doc.get("class"))
            coder_arrays = {k[len("coder."):]: v for k, v in arrays.items() if k.startswith("coder.")}
            coder = coder_cls._from_state(coder_doc["params"], coder_arrays)
        obj = cls._build(params, coder)
        codes = arrays["codes"]
        if codes.ndim != 2 or codes.shape[1] != obj.code_size or codes.dtype != obj.code_dtype:
            raise FormatError(f"stored codes have shape {codes.shape} and dtype {codes.dtype}, "
                              f"expected (n, {obj.code_size}) {np.dtype(obj.code_dtype)}")
        obj._codes = codes
        obj._on_add(codes)
        return obj

    def _params(self) -> dict:
        raise NotImplementedError

    @classmethod
    def _build(cls, params, coder):
        raise NotImplementedError
