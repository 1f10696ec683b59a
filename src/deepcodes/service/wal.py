"""The write-ahead log: every add and remove, appended and fsynced before it is acknowledged.

The log is a folder of segments ``wal-<first seq>.log``. A segment starts with the 8-byte magic
``DCWAL001`` and holds records, each::

    length u32 | crc32 u32 | seq u64 | op u8 | 3 pad | n u32 | d u32 | ids n*int64 | vectors n*d*float32

little-endian; ``length`` counts the bytes after the crc field and the crc covers exactly those
bytes, so a torn write or a flipped bit is detected. Sequence numbers rise from record to record (by one in a single index; a shard of a
sharded index sees only the numbers of the batches routed to it). A segment named F holds seq >= F. When a
snapshot of the index is durable, the segments it covers are deleted (:meth:`drop_through`).

Recovery (:meth:`open`) keeps every complete record. A torn or corrupt record at the very end of the
last segment (a crash in the middle of an append: that write was never acknowledged) is cut off and
reported in :attr:`notes`; a bad record anywhere else would mean losing acknowledged writes after
it, so :meth:`open` refuses with :class:`FormatError` instead.
"""
from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..persist import fsync_dir

MAGIC = b"DCWAL001"
OPS = {"add": 1, "remove": 2}
_OP_NAMES = {v: k for k, v in OPS.items()}
_HEAD = struct.Struct("<IIQB3xII")
_SEGMENT = re.compile(r"^wal-(\d{16})\.log$")
MAX_RECORD_BYTES = 2**31


@dataclass(frozen=True)
class LogRecord:
    """One logged change: ``op`` "add" (``ids`` (n,) int64, ``vectors`` (n, d) float32) or "remove"."""

    seq: int
    op: str
    ids: np.ndarray
    vectors: np.ndarray | None = None


def encode_record(record: LogRecord) -> list[bytes | memoryview]:
    """The byte chunks of ``record`` as the log stores it."""
    ids = np.ascontiguousarray(record.ids, dtype="<i8")
    if record.op == "add":
        vectors = np.ascontiguousarray(record.vectors, dtype="<f4")
        n, d = vectors.shape
        if n != ids.shape[0]:
            raise ValueError("a log record needs one id per vector")
    else:
        vectors, n, d = None, ids.shape[0], 0
    body = [memoryview(ids).cast("B")] + ([memoryview(vectors).cast("B")] if vectors is not None else [])
    length = _HEAD.size - 8 + sum(len(b) for b in body)
    if length > MAX_RECORD_BYTES:
        raise ValueError(f"a log record of {length} bytes is too large")
    head_rest = _HEAD.pack(length, 0, record.seq, OPS[record.op], n, d)[8:]
    crc = zlib.crc32(head_rest)
    for b in body:
        crc = zlib.crc32(b, crc)
    return [struct.pack("<II", length, crc), head_rest, *body]


def _decode(buf: bytes, where: str) -> LogRecord:
    length, _crc, seq, op, n, d = _HEAD.unpack_from(buf, 0)
    if op not in _OP_NAMES:
        raise FormatError(f"{where}: unknown operation {op}")
    vec_bytes = n * d * 4 if op == OPS["add"] else 0
    if length != _HEAD.size - 8 + n * 8 + vec_bytes or (op == OPS["add"] and d == 0):
        raise FormatError(f"{where}: record sizes disagree")
    ids = np.frombuffer(buf, dtype="<i8", count=n, offset=_HEAD.size).astype(np.int64)
    vectors = None
    if op == OPS["add"]:
        vectors = np.frombuffer(buf, dtype="<f4", count=n * d, offset=_HEAD.size + n * 8)
        vectors = vectors.astype(np.float32).reshape(n, d)
    return LogRecord(seq=int(seq), op=_OP_NAMES[op], ids=ids, vectors=vectors)


def _read_segment(path: Path):
    """Yield ``(record, end offset)`` for each good record, then ``(None, (offset, reason, trailing))``
    if the segment does not end cleanly (``trailing``: bytes after the bad record, which a torn final
    write never leaves)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            yield None, (0, "missing or damaged segment header", 0)
            return
        offset = len(MAGIC)
        while offset < size:
            head = f.read(8)
            if len(head) < 8:
                yield None, (offset, f"torn record header ({len(head)} of 8 bytes)", 0)
                return
            length, crc = struct.unpack("<II", head)
            if length < _HEAD.size - 8 or length > MAX_RECORD_BYTES:
                yield None, (offset, f"impossible record length {length}", 0)
                return
            rest = f.read(length)
            if len(rest) < length:
                yield None, (offset, f"torn record ({len(rest)} of {length} bytes)", 0)
                return
            if zlib.crc32(rest) != crc:
                yield None, (offset, "checksum mismatch", size - offset - 8 - length)
                return
            try:
                record = _decode(head + rest, f"{path.name} at byte {offset}")
            except FormatError as exc:
                yield None, (offset, str(exc), size - offset - 8 - length)
                return
            offset += 8 + length
            yield record, offset


class WriteAheadLog:
    """Append-only, checksummed, fsynced log of index changes in ``folder``."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.notes: list[str] = []
        self._file = None
        self._current: Path | None = None
        self.bytes_written = 0

    def segments(self) -> list[tuple[int, Path]]:
        """``(first seq, path)`` of every segment, oldest first."""
        if not self.folder.exists():
            return []
        found = []
        for p in self.folder.iterdir():
            m = _SEGMENT.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def open(self, next_seq: int):
        """Recover the log and yield its records in order; afterwards the log is open for appends.

        A bad record at the end of the last segment is cut off (noted in :attr:`notes`); a bad record
        before other records raises :class:`FormatError`. ``next_seq`` names the segment created when
        there is none.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        segments = self.segments()
        last_seq = None
        for i, (first, path) in enumerate(segments):
            is_last = i == len(segments) - 1
            for record, info in _read_segment(path):
                if record is None:
                    offset, reason, trailing = info
                    if not is_last or trailing > 0:
                        raise FormatError(
                            f"write-ahead log {path} is damaged at byte {offset} ({reason}) and "
                            f"acknowledged writes follow it; refusing to start (move the damaged "
                            f"segments away to start from the state before them)")
                    cut = path.stat().st_size - offset
                    self.notes.append(f"skipped a torn final log record in {path.name} at byte "
                                      f"{offset}: {reason} ({cut} bytes cut off; it was never acknowledged)")
                    if offset == 0:
                        with open(path, "wb") as f:
                            f.write(MAGIC)
                            os.fsync(f.fileno())
                    else:
                        os.truncate(path, offset)
                    break
                if record.seq < first or (last_seq is not None and record.seq <= last_seq):
                    raise FormatError(f"write-ahead log {path}: record {record.seq} is out of order")
                last_seq = record.seq
                yield record
        if segments:
            self._open_segment(segments[-1][1])
        else:
            self.rotate(next_seq)

    def _open_segment(self, path: Path) -> None:
        if self._file is not None:
            self._file.close()
        new = not path.exists()
        self._file = open(path, "ab", buffering=0)
        if new:
            self._file.write(MAGIC)
            os.fsync(self._file.fileno())
            fsync_dir(self.folder)
        self._current = path

    def append(self, record: LogRecord) -> int:
        """Append ``record`` and fsync; return the segment's size before it (for :meth:`undo`)."""
        before = self._file.tell()
        for chunk in encode_record(record):
            self._file.write(chunk)
        os.fsync(self._file.fileno())
        self.bytes_written += self._file.tell() - before
        return before

    def undo(self, offset: int) -> None:
        """Cut the current segment back to ``offset`` (a record whose change could not be applied)."""
        self._file.truncate(offset)
        self._file.seek(offset)
        os.fsync(self._file.fileno())

    def rotate(self, next_seq: int) -> None:
        """Start a new segment whose first record will be ``next_seq``."""
        self._open_segment(self.folder / f"wal-{next_seq:016d}.log")

    def drop_through(self, seq: int) -> int:
        """Delete the segments holding only records <= ``seq``; return how many were deleted."""
        segments = self.segments()
        dropped = 0
        for (first, path), (next_first, _) in zip(segments, segments[1:]):
            if next_first - 1 <= seq and path != self._current:
                path.unlink()
                dropped += 1
        if dropped:
            fsync_dir(self.folder)
        return dropped

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for _, p in self.segments())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
