"""A durable index: every change is in a fsynced write-ahead log before it is acknowledged, and
snapshots of the index are written atomically in the background.

Layout of ``data_dir``::

    snapshots/snap-<seq>/index.dcx     the index after change <seq> (deepcodes file)
                         gallery.dcx   raw vectors, labels and keys of the stored items
                         manifest.json seq, ntotal and the sha256 of each file (written last)
    wal/wal-<first seq>.log            changes since the previous snapshot (see ``wal.py``)

A snapshot is written into a temporary folder, fsynced and renamed into place. The two newest
snapshots are kept, and the log is cut back only to the older of them: if the newest snapshot turns
out corrupt, the older one plus the log still hold every acknowledged change. On open, the newest
snapshot whose files match their checksums is loaded and the log records after it are replayed.

Concurrency: writers are serialised by a mutex; a change is logged (and fsynced) while searches go
on, then applied under the exclusive side of a readers-writer lock, so a search sees a batch either
whole or not at all.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from .. import persist
from ..errors import FormatError, InputError
from ..index.base import check_ids as check_id_values
from ..validation import check_matrix
from .gallery import Gallery
from .rwlock import ReadWriteLock
from .wal import LogRecord, WriteAheadLog

log = logging.getLogger(__name__)

_SNAP = re.compile(r"^snap-(\d{16})$")
INDEX_FILE, GALLERY_FILE, MANIFEST = "index.dcx", "gallery.dcx", "manifest.json"


def check_ids(ids, name: str = "ids") -> np.ndarray:
    """``ids`` as int64 (n,): a non-empty batch of distinct ids >= 0, or InputError naming the first bad one."""
    arr = check_id_values(ids)
    if arr.size == 0:
        raise InputError(f"{name} is empty")
    order = np.sort(arr)
    twice = order[1:][order[1:] == order[:-1]]
    if twice.size:
        raise InputError(f"id {twice[0]} appears more than once in the batch")
    return arr


def check_vectors(X, d: int, name: str = "vectors") -> np.ndarray:
    """``X`` as float32 (n, d), finite after the cast (check_matrix: a value beyond float32's range
    would become inf, and one whose squared norm overflows is refused too)."""
    return check_matrix(X, name, dim=d)


def write_snapshot(snapshots: Path, seq: int, index_bytes: bytes, gallery: Gallery | None) -> Path:
    """Write ``snap-<seq>`` atomically (temporary folder, fsync, rename) and return its path."""
    final = snapshots / f"snap-{seq:016d}"
    tmp = snapshots / f".tmp-snap-{seq:016d}-{os.getpid()}-{threading.get_ident()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        persist.atomic_write_bytes(tmp / INDEX_FILE, [index_bytes])
        files = [INDEX_FILE]
        if gallery is not None:
            gallery.save(tmp / GALLERY_FILE)
            files.append(GALLERY_FILE)
        manifest = {"format": "deepcodes-snapshot", "format_version": 1, "seq": seq,
                    "files": {f: persist.file_sha256(tmp / f) for f in files}}
        persist.atomic_write_bytes(tmp / MANIFEST, [json.dumps(manifest, sort_keys=True).encode()])
        persist.fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        persist.fsync_dir(snapshots)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_snapshot(path: Path):
    """``(seq, index, gallery or None)`` of a snapshot folder, or FormatError if any file is off."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        seq, files = int(manifest["seq"]), dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{path.name}: unreadable manifest ({exc})") from None
    if INDEX_FILE not in files:
        raise FormatError(f"{path.name}: manifest names no index file")
    for name, digest in files.items():
        if name not in (INDEX_FILE, GALLERY_FILE):
            raise FormatError(f"{path.name}: manifest names an unexpected file {name!r}")
        if not (path / name).is_file() or persist.file_sha256(path / name) != digest:
            raise FormatError(f"{path.name}: {name} does not match its checksum (corrupt or truncated)")
    index = persist.load(path / INDEX_FILE)
    gallery = Gallery.load(path / GALLERY_FILE) if GALLERY_FILE in files else None
    return seq, index, gallery


def snapshot_folders(data_dir: Path) -> list[tuple[int, Path]]:
    folder = Path(data_dir) / "snapshots"
    if not folder.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _SNAP.match(p.name)))


class DurableIndex:
    """An index in ``data_dir`` whose acknowledged adds and removes survive a crash.

    Open with :meth:`open`. ``snapshot_every`` logged changes or ``snapshot_interval`` seconds after
    the first unsnapshotted change (whichever comes first), a background thread writes a snapshot.
    ``notes`` says what recovery skipped.
    """

    #: Searches are short in-process calls: the service runs them on its event loop.
    searches_inline = True

    def __init__(self, data_dir: Path, index, gallery: Gallery | None, wal: WriteAheadLog, seq: int,
                 snapshot_seqs: list[int], notes: list[str], *, snapshot_every: int,
                 snapshot_interval: float, background: bool):
        self.data_dir = Path(data_dir)
        self.index = index
        self.gallery = gallery
        self.wal = wal
        self.last_seq = seq
        self.notes = notes
        self.snapshot_every = snapshot_every
        self.snapshot_interval = snapshot_interval
        self.lock = ReadWriteLock()
        self._writer = threading.Lock()
        self._snapshotting = threading.Lock()
        self._snapshot_seqs = snapshot_seqs
        self._changes_since_snapshot = 0
        self._first_unsnapshotted = None
        self.snapshots_written = 0
        self.last_snapshot_error: str | None = None
        self.recall: dict | None = None
        self._stop = threading.Event()
        self._thread = None
        if background:
            self._thread = threading.Thread(target=self._background, name="deepcodes-snapshots", daemon=True)
            self._thread.start()

    # ---- opening -------------------------------------------------------------------------------
    @classmethod
    def create(cls, data_dir, index, gallery: Gallery | None = None) -> None:
        """Write the first snapshot (seq 0) of ``index`` into an empty ``data_dir``."""
        data_dir = Path(data_dir)
        if snapshot_folders(data_dir):
            raise InputError(f"{data_dir} already holds an index")
        if not getattr(index, "is_trained", True):
            raise InputError("the index is not trained: train it before serving it")
        if gallery is not None and gallery.d != index.d:
            raise InputError(f"gallery vectors have dimension {gallery.d}, the index {index.d}")
        (data_dir / "snapshots").mkdir(parents=True, exist_ok=True)
        write_snapshot(data_dir / "snapshots", 0, persist.dumps(index), gallery)

    @classmethod
    def open(cls, data_dir, initial_index=None, initial_gallery: Gallery | None = None, *,
             snapshot_every: int = 20000, snapshot_interval: float = 30.0,
             background: bool = True) -> "DurableIndex":
        """Recover the index in ``data_dir`` (creating it from ``initial_index`` when empty)."""
        data_dir = Path(data_dir)
        notes: list[str] = []
        if not snapshot_folders(data_dir):
            if initial_index is None:
                raise InputError(f"{data_dir} holds no index: give one to start from")
            cls.create(data_dir, initial_index, initial_gallery)
        elif initial_index is not None:
            notes.append(f"{data_dir} already holds an index; it is used and the given index file is ignored")
        snaps = snapshot_folders(data_dir)
        loaded = None
        for seq, path in reversed(snaps):
            try:
                loaded = read_snapshot(path)
                break
            except FormatError as exc:
                notes.append(f"skipped snapshot {path.name}: {exc}")
        if loaded is None:
            raise FormatError(f"{data_dir}: no snapshot could be loaded ({'; '.join(notes)})")
        seq, index, gallery = loaded
        wal = WriteAheadLog(data_dir / "wal")
        segments = [first for first, _ in wal.segments()]
        if segments and seq + 1 not in segments and not (segments[0] <= seq + 1 and len(segments) == 1):
            raise FormatError(f"{data_dir}: the log segment that follows snapshot {seq} is missing; "
                              f"acknowledged changes would be lost, refusing to start")
        replayed = 0
        for record in wal.open(next_seq=seq + 1):
            if record.seq <= seq:
                continue
            try:
                cls._apply(index, gallery, record)
            except InputError as exc:
                raise FormatError(f"{data_dir}: log record {record.seq} does not apply to snapshot "
                                  f"{seq} ({exc}); refusing to start") from None
            seq = record.seq
            replayed += 1
        if index.ntotal:
            index.contains(np.zeros(1, np.int64))   # the deferred merge, before readers arrive
        notes.extend(wal.notes)
        if replayed:
            notes.append(f"replayed {replayed} logged change(s) after snapshot {loaded[0]}")
        for note in notes:
            log.info("%s", note)
        durable = cls(data_dir, index, gallery, wal, seq, [s for s, _ in snaps], notes,
                      snapshot_every=snapshot_every, snapshot_interval=snapshot_interval,
                      background=background)
        durable._changes_since_snapshot = replayed
        durable._first_unsnapshotted = time.monotonic() if replayed else None
        return durable

    # ---- changes ---------------------------------------------------------------------------------
    @staticmethod
    def _apply(index, gallery: Gallery | None, record: LogRecord) -> None:
        if record.op == "add":
            index.add(record.vectors, ids=record.ids)
            if gallery is not None:
                gallery.add(record.ids, record.vectors)
        else:
            index.remove(record.ids)
            if gallery is not None:
                gallery.remove(record.ids)

    def _log_and_apply(self, record: LogRecord) -> None:
        offset = self.wal.append(record)
        try:
            with self.lock.write():
                self._apply(self.index, self.gallery, record)
                # An index defers work (merging newly added codes into id order) to its next read;
                # a lookup here does that work under the exclusive lock, so that the searches under
                # the shared lock only read and never race one another.
                self.index.contains(record.ids[:1])
        except BaseException:
            self.wal.undo(offset)
            raise
        self.last_seq = record.seq
        self._changes_since_snapshot += 1
        if self._first_unsnapshotted is None:
            self._first_unsnapshotted = time.monotonic()

    def _next_seq(self, seq: int | None) -> int | None:
        """The sequence number for a change, or None when ``seq`` was already applied (a resend)."""
        if seq is None:
            return self.last_seq + 1
        seq = int(seq)
        return None if seq <= self.last_seq else seq

    def add(self, ids, vectors, *, seq: int | None = None) -> int:
        """Add ``vectors`` (n, d) under caller ``ids`` (n,); durable when this returns the change's seq.

        ``seq`` (a sharded index's batch number) makes a resend of an applied change a no-op.
        """
        ids = check_ids(ids)
        X = check_vectors(vectors, self.index.d)
        if X.shape[0] != ids.shape[0]:
            raise InputError(f"{ids.shape[0]} ids for {X.shape[0]} vectors")
        with self._writer:
            seq = self._next_seq(seq)
            if seq is None:
                return self.last_seq
            present = np.asarray(self.index.contains(ids), dtype=bool)
            if present.any():
                raise InputError(f"id {ids[np.flatnonzero(present)[0]]} is already stored")
            self._log_and_apply(LogRecord(seq, "add", ids, X))
            return seq

    def remove(self, ids, *, seq: int | None = None) -> int:
        """Remove the items ``ids``, all or none (an id that is not stored: InputError naming it)."""
        ids = check_ids(ids)
        with self._writer:
            seq = self._next_seq(seq)
            if seq is None:
                return self.last_seq
            present = np.asarray(self.index.contains(ids), dtype=bool)
            if not present.all():
                raise InputError(f"id {ids[np.flatnonzero(~present)[0]]} is not stored")
            self._log_and_apply(LogRecord(seq, "remove", ids))
            return seq

    # ---- reads -----------------------------------------------------------------------------------
    def search(self, Q, k: int, **params):
        Q = check_vectors(Q, self.index.d, "query vectors")
        with self.lock.read():
            return self.index.search(Q, k, **params)

    def search_by_id(self, ids, k: int, **params):
        ids = check_ids(ids)
        with self.lock.read():
            return self.index.search_by_id(ids, k, **params)

    def warm_up(self) -> None:
        """One search, so that kernels are compiled (or loaded from numba's cache) before clients come."""
        if self.index.ntotal:
            self.search(np.zeros((1, self.index.d), np.float32), 1)

    def contains(self, ids) -> np.ndarray:
        with self.lock.read():
            return np.asarray(self.index.contains(np.asarray(ids, np.int64)), dtype=bool)

    def item(self, item_id: int) -> dict:
        """What is stored under ``item_id``: its code, and the gallery's vector, label and key."""
        with self.lock.read():
            if int(item_id) not in self.index:
                raise InputError(f"id {item_id} is not stored")
            code = self.index.get_codes(np.array([item_id], np.int64))[0]
            out = {"id": int(item_id), "code": [int(c) for c in code]}
            g = self.gallery
            if g is not None and item_id in g:
                out.update(label=g.label(item_id), key=g.keys.get(int(item_id)),
                           vector=[float(v) for v in g.vector(item_id)])
            return out

    def labels_and_keys(self, ids) -> dict:
        """``{"labels": [...], "keys": [...]}`` of ``ids`` from the gallery (None where unknown; id -1 too)."""
        with self.lock.read():
            g = self.gallery
            labels = [None if g is None or i < 0 else g.label(i) for i in ids]
            keys = [None if g is None or i < 0 else g.keys.get(int(i)) for i in ids]
        return {"labels": labels, "keys": keys}

    def image(self, item_id: int) -> np.ndarray | None:
        with self.lock.read():
            return None if self.gallery is None else self.gallery.image(item_id)

    def describe(self) -> dict:
        with self.lock.read():
            return self.index.describe()

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    @property
    def d(self) -> int:
        return self.index.d

    def stats(self) -> dict:
        with self.lock.read():
            desc = self.index.describe()
            g = self.gallery
            gallery = None if g is None else {
                "items": len(g), "image_shape": g.image_shape, "scale": g.scale,
                "labels": g.has_labels(), "keys": bool(g.keys)}
        return {
            "ntotal": int(desc.get("ntotal", self.index.ntotal)), "index": desc, "gallery": gallery,
            "recall": self.recall, "last_seq": self.last_seq, "snapshots": list(self._snapshot_seqs),
            "snapshots_written": self.snapshots_written, "wal_bytes": self.wal.size_bytes(),
            "changes_since_snapshot": self._changes_since_snapshot,
            "last_snapshot_error": self.last_snapshot_error, "recovery": list(self.notes),
        }

    def sample_ids(self, n: int, seed: int = 0) -> np.ndarray:
        """Up to ``n`` stored ids that the gallery also holds (for the page's "random item")."""
        with self.lock.read():
            if self.gallery is None:
                return np.empty(0, np.int64)
            ids = self.gallery.frozen().live()[0]
        if ids.size == 0:
            return ids
        return np.random.default_rng(seed).choice(ids, size=min(n, ids.size), replace=False)

    # ---- recall ----------------------------------------------------------------------------------
    def measure_recall(self, n_queries: int = 200, k: int = 10, seed: int = 0) -> dict | None:
        """k-recall@k of ``n_queries`` stored items (queried by their raw vectors) against exact
        Euclidean search over the gallery's raw vectors; None when the gallery does not cover the index."""
        from ..knn.exact import exact_knn

        with self.lock.read():
            g = None if self.gallery is None else self.gallery.frozen()
            ntotal = self.index.ntotal
        if g is None or len(g) != ntotal or ntotal <= k:
            self.recall = None
            return None
        ids, vectors, _ = g.live()
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(ids), size=min(n_queries, len(ids)), replace=False))
        _, truth_rows = exact_knn(vectors, vectors[rows], k)
        truth = ids[truth_rows]
        with self.lock.read():
            if not bool(np.all(self.index.contains(ids[rows]))):
                return self.recall
            _, found = self.index.search(vectors[rows], k)
        hits = sum(len(np.intersect1d(t, f)) for t, f in zip(truth, found))
        self.recall = {"k": k, "queries": int(len(rows)), "recall": hits / (k * len(rows)),
                       "what": f"{k}-recall@{k} of {len(rows)} stored items queried by their raw "
                               f"vectors, against exact Euclidean search over the stored raw vectors"}
        return self.recall

    # ---- snapshots -------------------------------------------------------------------------------
    def snapshot(self) -> int | None:
        """Write a snapshot of the current state now; return its seq (None when nothing changed)."""
        with self._snapshotting:
            with self._writer:
                seq = self.last_seq
                if self._snapshot_seqs and seq == self._snapshot_seqs[-1]:
                    return None
                with self.lock.read():
                    blob = persist.dumps(self.index)
                gallery = None if self.gallery is None else self.gallery.frozen()
                self.wal.rotate(seq + 1)
                self._changes_since_snapshot = 0
                self._first_unsnapshotted = None
            snapshots = self.data_dir / "snapshots"
            write_snapshot(snapshots, seq, blob, gallery)
            self._snapshot_seqs.append(seq)
            self.snapshots_written += 1
            # Keep this snapshot and the one before it; the log back to the one before it.
            keep_from = self._snapshot_seqs[-2] if len(self._snapshot_seqs) > 1 else seq
            self.wal.drop_through(keep_from)
            for old_seq, path in snapshot_folders(self.data_dir):
                if old_seq < keep_from:
                    shutil.rmtree(path, ignore_errors=True)
            self._snapshot_seqs = [s for s in self._snapshot_seqs if s >= keep_from]
            return seq

    def _due(self) -> bool:
        if self._changes_since_snapshot == 0:
            return False
        if self._changes_since_snapshot >= self.snapshot_every:
            return True
        first = self._first_unsnapshotted
        return first is not None and time.monotonic() - first >= self.snapshot_interval

    def _background(self) -> None:
        while not self._stop.wait(0.5):
            if not self._due():
                continue
            try:
                self.snapshot()
                self.last_snapshot_error = None
            except Exception as exc:  # a failed snapshot leaves the log and older snapshots intact
                self.last_snapshot_error = f"{type(exc).__name__}: {exc}"
                log.error("snapshot failed: %s", self.last_snapshot_error)
                continue
            try:
                self.measure_recall()
            except Exception as exc:
                log.error("recall measurement failed: %s", exc)

    def close(self, *, final_snapshot: bool = True) -> None:
        """Stop the background thread, write a last snapshot (so the next start replays nothing)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if final_snapshot:
            self.snapshot()
        self.wal.close()
