"""Reproductions of the papers' comparisons. Each module exposes one function of one signature,
``run(out_dir: Path, options: ReproduceOptions) -> dict``, which writes a markdown table, a JSON
file and plots to ``out_dir`` and returns ``{"table": markdown, ...}``."""
from __future__ import annotations

from dataclasses import dataclass

SCHEDULES = ("default", "paper")


@dataclass(frozen=True)
class ReproduceOptions:
    """What every reproduction takes.

    quick : one seed at one code length, minutes on 2 CPU cores.
    seeds : seeds per configuration (0, 1, ...); ignored (1) when ``quick``.
    progress : show progress bars.
    device : torch device for the deep coders ("cpu", "cuda", ...).
    schedule : "default" (the fast schedule) or "paper" (the authors' training length, where a
        reproduction has one; the others refuse it).
    """

    quick: bool = False
    seeds: int = 3
    progress: bool = False
    device: str = "cpu"
    schedule: str = "default"

    @property
    def n_seeds(self) -> int:
        return 1 if self.quick else int(self.seeds)
