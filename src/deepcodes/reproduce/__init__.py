"""Reproductions of the papers' comparisons. Each module exposes one function of one signature,
``run(out_dir: Path, options: ReproduceOptions) -> dict``, which writes a markdown table, a JSON
file and plots to ``out_dir`` and returns ``{"table": markdown, ...}``."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError

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
    protocols, bits : run only these protocols / code lengths of the reproduction's own (empty: all).
    methods : run only these methods of the reproduction's own (empty: all); a reproduction without
        a choice of methods refuses it.
    """

    quick: bool = False
    seeds: int = 3
    progress: bool = False
    device: str = "cpu"
    schedule: str = "default"
    protocols: tuple[str, ...] = ()
    bits: tuple[int, ...] = ()
    methods: tuple[str, ...] = ()

    @property
    def n_seeds(self) -> int:
        return 1 if self.quick else int(self.seeds)

    def select(self, protocols, bits) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """The reproduction's ``protocols`` and ``bits`` narrowed to those asked for (in the
        reproduction's order); one it does not have is an ``InputError`` listing what it has."""
        return _subset("protocol", protocols, self.protocols), _subset("code length", bits, self.bits)

    def select_methods(self, methods) -> tuple[str, ...]:
        """The reproduction's ``methods`` narrowed to those asked for, as ``select`` does."""
        return _subset("method", methods, self.methods)


def _subset(what: str, available, asked) -> tuple:
    unknown = [a for a in asked if a not in available]
    if unknown:
        raise InputError(f"this reproduction has no {what} {unknown[0]!r}; it has: {', '.join(map(str, available))}")
    return tuple(a for a in available if not asked or a in asked)
