"""Result files: markdown tables, JSON, and figures (matplotlib's Agg canvas; no display needed)."""
from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..errors import InputError
from ..persist import atomic_write_bytes

__all__ = ["markdown_table", "write_json", "plot_map_vs_bits", "plot_pr_curves", "plot_recall_qps"]


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str], floatfmt: str = ".4f") -> str:
    """A GitHub-flavoured markdown table: a header row of ``columns``, then one line per row.

    Floats are written with ``floatfmt``, missing keys and None as empty cells; ``|`` is escaped.
    """
    columns = list(columns)
    if not columns:
        raise InputError("columns is empty")
    if isinstance(rows, Mapping) or not all(isinstance(row, Mapping) for row in rows):
        raise InputError("rows must be a sequence of mappings (one dict per table row)")
    try:
        format(0.0, floatfmt)
    except ValueError:
        raise InputError(f"floatfmt {floatfmt!r} is not a float format") from None
    lines = [_table_line(str(c) for c in columns), _table_line("---" for _ in columns)]
    lines += [_table_line(_cell(row.get(c), floatfmt) for c in columns) for row in rows]
    return "\n".join(lines) + "\n"


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` to ``path`` as indented strict JSON, atomically.

    numpy scalars and arrays become numbers and lists, int dict keys strings, NaN/inf null.
    """
    text = json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(path, [text.encode("utf-8")])


def plot_map_vs_bits(results: Sequence[Mapping], path: str | os.PathLike, title: str) -> None:
    """Plot mAP against code length: one subplot per protocol, one line per method.

    ``results`` are dicts with keys ``method``, ``protocol``, ``bits``, ``map``; the image format
    follows the suffix of ``path`` (PNG when it has none).
    """
    points = _records(results, ("method", "protocol", "bits", "map"), "results")
    seen = set()
    for r in points:
        key = (r["method"], r["protocol"], r["bits"])
        if key in seen:
            raise InputError(f"results hold method {key[0]!r}, protocol {key[1]!r}, bits {key[2]} twice")
        seen.add(key)
    protocols = list(dict.fromkeys(r["protocol"] for r in points))
    methods = list(dict.fromkeys(r["method"] for r in points))
    fig = Figure(figsize=(4.5 * len(protocols), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(protocols), squeeze=False)[0]
    for ax, protocol in zip(axes, protocols):
        bits_here = set()
        for i, method in enumerate(methods):
            mine = sorted((int(r["bits"]), float(r["map"])) for r in points
                          if r["protocol"] == protocol and r["method"] == method)
            if mine:
                bits, maps = zip(*mine)
                bits_here.update(bits)
                # Fixed colour per method, so a method looks the same in every subplot.
                ax.plot(bits, maps, marker="o", color=f"C{i % 10}", label=str(method))
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(bits_here), [str(b) for b in sorted(bits_here)])
        ax.minorticks_off()
        ax.set_xlabel("bits")
        ax.set_ylabel("mAP")
        ax.set_title(str(protocol))
        ax.grid(True, alpha=0.3)
    axes[-1].legend(fontsize="small")
    fig.suptitle(title)
    _save(fig, path)


def plot_pr_curves(curves: Sequence[Mapping], path: str | os.PathLike, title: str) -> None:
    """Plot precision against recall, one line per curve.

    ``curves`` are dicts with keys ``method``, ``precision``, ``recall`` (equal-length sequences;
    None or NaN precision points are left as gaps).
    """
    def frame(ax):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)

    _line_plot(curves, "recall", "precision", path, title, xlabel="recall", ylabel="precision", marker=".",
               frame=frame, size=(5.0, 4.2))


def plot_recall_qps(curves: Sequence[Mapping], path: str | os.PathLike, title: str, xlabel: str = "recall") -> None:
    """Plot queries/s (log scale) against recall, one line per curve (a parameter sweep).

    ``curves`` are dicts with keys ``method``, ``recall`` and ``qps`` (equal-length sequences).
    """
    def frame(ax):
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3, which="both")

    _line_plot(curves, "recall", "qps", path, title, xlabel=xlabel, ylabel="queries/s", marker="o",
               frame=frame, size=(5.4, 4.2))


def _line_plot(curves, x: str, y: str, path, title: str, *, xlabel: str, ylabel: str, marker: str, frame, size) -> None:
    """One line per curve of ``curves[i][y]`` against ``curves[i][x]``, labelled by ``method``."""
    curves = _records(curves, ("method", y, x), "curves")
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, curve in enumerate(curves):
        ys = _curve_values(curve[y], y)
        xs = _curve_values(curve[x], x)
        if ys.shape != xs.shape:
            raise InputError(f"curve {curve['method']!r}: {len(ys)} {y} values for {len(xs)} {x} values")
        ax.plot(xs, ys, marker=marker, color=f"C{i % 10}", label=str(curve["method"]))
    frame(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    ax.set_title(title)
    _save(fig, path)


def _table_line(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _cell(value, floatfmt: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        text = format(float(value), floatfmt)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _jsonable(obj):
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if isinstance(key, (bool, np.bool_)) or not isinstance(key, (str, int, np.integer)):
                raise InputError(f"JSON object keys must be strings or ints, got {key!r}")
            out[str(key)] = _jsonable(value)
        return out
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise InputError(f"cannot write a {type(obj).__name__} as JSON")


def _records(items, keys: tuple[str, ...], name: str) -> list[Mapping]:
    if isinstance(items, Mapping):
        raise InputError(f"{name} must be a sequence of dicts, not one dict")
    items = list(items)
    if not items:
        raise InputError(f"{name} is empty")
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InputError(f"{name}[{i}] is a {type(item).__name__}, expected a dict")
        missing = [k for k in keys if k not in item]
        if missing:
            raise InputError(f"{name}[{i}] lacks the key(s) {missing}")
    return items


def _curve_values(values, name: str) -> np.ndarray:
    try:
        arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a sequence of numbers") from None
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D")
    return arr


def _save(fig: Figure, path: str | os.PathLike) -> None:
    """Render ``fig`` in the format of ``path``'s suffix and write it atomically."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".").lower() or "png", dpi=120)
    atomic_write_bytes(path, [buf.getbuffer()])
