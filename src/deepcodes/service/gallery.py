"""What the web page shows of each stored item, beside its code: the raw vector it was added with
(drawn as an image for image data), its label and its key (e.g. a GloVe word).

An index keeps compact codes only; the gallery keeps the originals so that the page can draw
neighbours and the service can measure its own recall against exact search. Rows are kept in
immutable chunks, so a snapshot can write them while new adds arrive.
"""
from __future__ import annotations

import numpy as np

from .. import persist
from ..errors import FormatError

GALLERY_KIND = "gallery"
NO_LABEL = -1

# Image shapes the page can draw, by vector dimension: (height, width, channels). A vector of
# 3072 values is CIFAR-10's channel-major layout (3, 32, 32).
IMAGE_SHAPES = {784: (28, 28, 1), 3072: (32, 32, 3)}


class Gallery:
    """Raw vectors (n, d) float32, labels (n,) int64 (-1: none) and optional string keys, by id."""

    def __init__(self, d: int):
        self.d = int(d)
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []   # (ids, vectors, labels)
        self._where: dict[int, tuple[int, int]] = {}                        # id -> (chunk, row)
        self.keys: dict[int, str] = {}
        self.scale = 1.0   # the value drawn as white: 1.0 for data in [0, 1], 255.0 for raw pixels

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, item_id: int) -> bool:
        return int(item_id) in self._where

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        return IMAGE_SHAPES.get(self.d)

    def add(self, ids: np.ndarray, vectors: np.ndarray, labels: np.ndarray | None = None,
            keys: list[str] | None = None) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        labels = np.full(len(ids), NO_LABEL, np.int64) if labels is None else np.asarray(labels, np.int64)
        c = len(self._chunks)
        self._chunks.append((ids, np.asarray(vectors, dtype=np.float32), labels))
        self._where.update({int(i): (c, r) for r, i in enumerate(ids.tolist())})
        if keys is not None:
            self.keys.update({int(i): str(k) for i, k in zip(ids.tolist(), keys)})
        if len(self._chunks) == 1 and len(ids):
            self.scale = 255.0 if float(np.max(vectors)) > 1.0 else 1.0

    def remove(self, ids) -> None:
        for i in np.asarray(ids, dtype=np.int64).tolist():
            self._where.pop(i, None)
            self.keys.pop(i, None)

    def vector(self, item_id: int) -> np.ndarray | None:
        where = self._where.get(int(item_id))
        if where is None:
            return None
        c, r = where
        return self._chunks[c][1][r]

    def label(self, item_id: int) -> int | None:
        where = self._where.get(int(item_id))
        if where is None:
            return None
        lab = int(self._chunks[where[0]][2][where[1]])
        return None if lab == NO_LABEL else lab

    def has_labels(self) -> bool:
        return any(bool((labels != NO_LABEL).any()) for _, _, labels in self._chunks)

    def image(self, item_id: int) -> np.ndarray | None:
        """The item as an (h, w, c) uint8 image, or None when the data is not image-shaped."""
        v = self.vector(item_id)
        shape = self.image_shape
        if v is None or shape is None:
            return None
        h, w, ch = shape
        img = v.reshape(ch, h, w).transpose(1, 2, 0)
        return np.clip(np.rint(img * (255.0 / self.scale)), 0, 255).astype(np.uint8)

    def frozen(self) -> "Gallery":
        """A copy that later adds and removes do not change (the row arrays are shared, not copied)."""
        copy = Gallery(self.d)
        copy._chunks, copy._where, copy.keys, copy.scale = list(self._chunks), dict(self._where), dict(self.keys), self.scale
        return copy

    def subset(self, keep) -> "Gallery":
        """A gallery of the items for which ``keep(ids) -> bool array`` is true."""
        ids, vectors, labels = self.live()
        sel = np.asarray(keep(ids), dtype=bool)
        part = Gallery(self.d)
        part.add(ids[sel], vectors[sel], labels[sel])
        part.keys = {i: k for i, k in self.keys.items() if i in part}
        part.scale = self.scale
        return part

    def live(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ids, vectors, labels)`` of every stored item, in insertion order."""
        chunks = list(self._chunks)
        where = self._where
        parts = []
        for c, (ids, vectors, labels) in enumerate(chunks):
            keep = np.fromiter((where.get(i) == (c, r) for r, i in enumerate(ids.tolist())),
                               dtype=bool, count=len(ids))
            if keep.any():
                parts.append((ids[keep], vectors[keep], labels[keep]))
        if not parts:
            return (np.empty(0, np.int64), np.empty((0, self.d), np.float32), np.empty(0, np.int64))
        return tuple(np.concatenate(p) for p in zip(*parts))

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays and a JSON document for :func:`deepcodes.persist.write_arrays`."""
        ids, vectors, labels = self.live()
        doc = {"format": persist.FORMAT_NAME, "format_version": persist.FORMAT_VERSION,
               "kind": GALLERY_KIND, "arrays": ["ids", "labels", "vectors"], "d": self.d, "scale": self.scale,
               "keys": {str(i): k for i, k in self.keys.items()}}
        return {"ids": ids, "vectors": vectors, "labels": labels}, doc

    def save(self, path) -> None:
        persist.write_arrays(path, *self.state())

    @classmethod
    def load(cls, path) -> "Gallery":
        arrays, doc = persist.read_arrays(path)
        if doc.get("kind") != GALLERY_KIND or set(arrays) != {"ids", "vectors", "labels"}:
            raise FormatError(f"{path}: not a deepcodes gallery file")
        ids, vectors, labels = arrays["ids"], arrays["vectors"], arrays["labels"]
        d = int(doc.get("d", 0))
        if vectors.ndim != 2 or vectors.shape != (len(ids), d) or labels.shape != ids.shape:
            raise FormatError(f"{path}: gallery arrays disagree in shape")
        gallery = cls(d)
        gallery.add(ids, vectors, labels)
        gallery.scale = float(doc.get("scale", 1.0))
        keys = doc.get("keys", {})
        if not isinstance(keys, dict):
            raise FormatError(f"{path}: gallery keys are not an object")
        gallery.keys = {int(i): str(k) for i, k in keys.items()}
        return gallery
