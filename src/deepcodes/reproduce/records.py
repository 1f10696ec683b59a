"""Result records of the reproductions: each run's result cached as JSON (so an interrupted
reproduction resumes) and records grouped for the mean/std tables."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

from ..eval.report import write_json

log = logging.getLogger(__name__)


def cached_json(path: Path, compute: Callable[[], object]):
    """The JSON value stored at ``path``, or ``compute()`` written there (atomically) and returned.
    An unreadable file is recomputed."""
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("ignoring unreadable run file %s", path)
    value = compute()
    write_json(path, value)
    return value


def group_rows(rows, keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    """Rows grouped by the values of ``keys``, groups and rows in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups
