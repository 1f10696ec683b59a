"""A readers-writer lock: many concurrent readers, or one writer, never both.

Writers are preferred: once a writer waits, new readers wait too, so a steady stream of searches
cannot starve an add.
"""
from __future__ import annotations

import contextlib
import threading


class ReadWriteLock:
    """``with lock.read(): ...`` for searches, ``with lock.write(): ...`` to change the index."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def read(self):
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self):
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
