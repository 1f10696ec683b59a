"""Network weights from a file that may be hostile: checked against the module they are for before
torch sees them."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import FormatError
from ..validation import check_state_array, check_state_keys, first_line


def load_checked_weights(build: Callable[[], torch.nn.Module], weights: dict[str, np.ndarray],
                         what: str) -> torch.nn.Module:
    """The module ``build()`` returns, in eval mode, holding the saved ``weights`` (its
    ``state_dict`` names -> arrays), after checking that the names are exactly the module's and
    that every array has the module's shape and dtype, with finite float32 values where it is a
    float. ``build`` runs first on torch's meta device, so a file describing a huge network is
    refused before anything is allocated. FormatError, naming ``what``, on any mismatch."""
    try:
        with torch.device("meta"):
            expected = {k: (tuple(v.shape), np.dtype(str(v.dtype).removeprefix("torch.")))
                        for k, v in build().state_dict().items()}
    except (RuntimeError, OverflowError, TypeError, ValueError) as exc:
        # torch's refusal of sizes no real network has (beyond int64: a TypeError, negative: a
        # RuntimeError); only this meta-device build of a file's parameters is guarded so
        raise FormatError(f"{what}: its parameters describe a network that cannot be built ({first_line(exc)})") from None
    check_state_keys(what, weights, expected, "network arrays")
    for name, (shape, dtype) in expected.items():
        check_state_array(weights[name], f"network.{name}", shape, dtype)
    module = build()
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    return module.eval()
