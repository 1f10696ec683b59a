"""Objects saved inside objects: an index's coder or front, a front's model. The part's parameters
go into its holder's JSON document and its arrays into the holder's file under a name prefix, so one
deepcodes file holds the whole thing and loading imports only the modules the parts name."""
from __future__ import annotations

import numpy as np

from . import persist
from .errors import FormatError


def part_state(obj, prefix: str) -> tuple[dict, dict[str, np.ndarray]]:
    """``(document, arrays)`` of the registered object ``obj``, its arrays renamed ``prefix.name``."""
    params, arrays = obj._get_state()
    return ({"class": type(obj).__name__, "params": params},
            {f"{prefix}.{name}": arr for name, arr in arrays.items()})


def part_from_state(document, arrays: dict[str, np.ndarray], prefix: str):
    """The object :func:`part_state` described, rebuilt from its document and the ``prefix.`` arrays."""
    if not isinstance(document, dict) or not isinstance(document.get("params"), dict):
        raise FormatError(f"corrupt description of the part {prefix!r}")
    cls = persist.class_named(document.get("class"))
    start = prefix + "."
    return cls._from_state(document["params"], {k[len(start):]: v for k, v in arrays.items() if k.startswith(start)})
