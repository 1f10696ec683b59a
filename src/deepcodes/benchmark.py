"""``deepcodes bench``: recall and queries/s of an index file over a parameter sweep, and of the faiss
index of the same bytes per vector, built in the same run from the same training rows and base.

Recall is measured against exact ground truth (an ann-benchmarks ``neighbors`` set, ids in the
index's id space): ``R@R`` is the fraction of queries whose exact nearest neighbour is among the
first R results (faiss's and the VLQ paper's Recall@R), ``10-recall@10`` the mean share of the
exact 10 nearest among the first 10 (ann-benchmarks' recall). A timing is the best of ``repeats``
searches of the whole query set, ours and faiss's interleaved setting by setting, after one
warm-up search each (compilation, page faults), on the same number of threads (faiss's OpenMP
pool and numba's pool are both set to ``threads``). The machine's load average before and after,
the OpenMP wait policy and numba's threading layer are reported with the numbers. faiss's
polysemous training is turned off (it changes no ADC result and costs a minute).
"""
from __future__ import annotations

import itertools
import logging
import os
import time
from pathlib import Path

import numpy as np

from .data.vectors import open_vectors, read_neighbors
from .errors import InputError
from .eval.metrics import one_recall_at, r_recall_at
from .eval.report import markdown_table, plot_recall_qps, write_json
from .indexing import stored_sources, training_sample
from .validation import check_int

log = logging.getLogger(__name__)

__all__ = ["parse_sweep", "run_bench", "faiss_code_bytes", "COLUMNS"]

RECALL_AT = (1, 10, 100)
COLUMNS = ["index", "spec", "params", "R@1", "R@10", "R@100", "10-recall@10", "queries/s", "vs faiss"]


def parse_sweep(items) -> list[dict]:
    """``["nprobe=1,2,4", "w=8,16"]`` -> every combination as a list of dicts (``[{}]`` for none)."""
    names, values = [], []
    for item in items or ():
        if "=" not in item:
            raise InputError(f"--sweep takes name=v1,v2,..., got {item!r}")
        name, _, text = item.partition("=")
        name = name.strip()
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not name or not parts:
            raise InputError(f"--sweep takes name=v1,v2,..., got {item!r}")
        if name in names:
            raise InputError(f"--sweep names {name!r} twice")
        try:
            parsed = [int(p) for p in parts]
        except ValueError:
            raise InputError(f"--sweep {name}: values must be integers, got {text!r}") from None
        names.append(name)
        values.append(parsed)
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def _label(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def set_threads(threads: int) -> dict:
    """Give faiss's OpenMP pool and numba's pool ``threads`` threads; describe the threading setup."""
    import faiss
    import numba

    threads = check_int(threads, "--threads", low=1, high=int(numba.config.NUMBA_NUM_THREADS))
    faiss.omp_set_num_threads(threads)
    numba.set_num_threads(threads)
    return {"threads": threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (runtime default)"),
            "cpu_count": os.cpu_count()}


def faiss_code_bytes(index) -> int:
    """Bytes of one stored code in a faiss index: the list's code for IVF indexes (the list number
    is implicit, as in ours), else the standalone code size."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return int(ivf.code_size)
    return int(index.sa_code_size())


def build_faiss(index, spec: str, *, progress: bool = False) -> tuple[object, dict]:
    """faiss ``index_factory(d, spec)``, trained on the rows ``index`` was trained on and filled with
    the vectors and ids it holds (replayed from the files its metadata records)."""
    import faiss

    try:
        fi = faiss.index_factory(int(index.d), spec)
    except RuntimeError as exc:
        raise InputError(f"faiss cannot build {spec!r}: {str(exc).splitlines()[-1]}") from None
    ours, theirs = int(index.code_size), faiss_code_bytes(fi)
    if ours != theirs:
        raise InputError(f"faiss {spec!r} stores {theirs} bytes per vector, the index {ours}: "
                         f"pick a faiss spec of the same size for a fair comparison")
    _skip_polysemous_training(fi)
    if faiss.try_extract_index_ivf(fi) is None:
        fi = faiss.IndexIDMap(fi)
    X = training_sample(index.meta_)
    t0 = time.perf_counter()
    fi.train(X)
    t1 = time.perf_counter()
    del X
    for block, ids in stored_sources(index, progress=progress):
        fi.add_with_ids(block, ids)
    t2 = time.perf_counter()
    if fi.ntotal != index.ntotal:
        raise InputError(f"replaying the index's files gave {fi.ntotal} vectors, the index holds {index.ntotal}")
    return fi, {"train_seconds": round(t1 - t0, 2), "add_seconds": round(t2 - t1, 2), "code_bytes": theirs}


def _skip_polysemous_training(fi) -> None:
    """Turn off faiss's polysemous training of PQ indexes (on by default in its factory): it only
    permutes the centroids for Hamming pre-filtering, which ADC search does not use (no result
    changes), and its annealing takes a minute even for a few hundred vectors."""
    import faiss

    inner = faiss.try_extract_index_ivf(fi)
    if inner is None:
        inner = fi.index if isinstance(fi, faiss.IndexPreTransform) else fi
    inner = faiss.downcast_index(inner)
    if hasattr(inner, "do_polysemous_training"):
        inner.do_polysemous_training = False


def _set_faiss_params(fi, params: dict) -> dict:
    """Set on ``fi`` the parameters of ``params`` that faiss's ParameterSpace knows for it; return those."""
    import faiss

    space = faiss.ParameterSpace()
    usable = {}
    for name, value in params.items():
        try:
            space.set_index_parameter(fi, name, value)
        except RuntimeError:  # faiss's answer for a parameter this index does not have
            continue
        usable[name] = value
    return usable


def _recalls(ids: np.ndarray, gt: np.ndarray) -> dict:
    k = ids.shape[1]
    Rs = [r for r in RECALL_AT if r <= k]
    out = {f"R@{r}": float(v) for r, v in zip(Rs, one_recall_at(ids, gt[:, 0], Rs))}
    if k >= 10 and gt.shape[1] >= 10:
        out["10-recall@10"] = float(r_recall_at(ids, gt, [10])[0])
    return out


def _timed(search):
    t = time.perf_counter()
    result = search()
    return time.perf_counter() - t, result


def run_bench(index, queries, gt, *, sweep=None, against_faiss: str | None = None, out_dir=None,
              threads: int | None = None, repeats: int = 3, k: int = 100, progress: bool = False) -> dict:
    """Measure ``index`` on ``queries`` against ``gt`` for every setting of ``sweep`` (a list of
    parameter dicts, see :func:`parse_sweep`), and the faiss index ``against_faiss`` at equal bytes.
    Writes ``bench.md``, ``bench.json`` and ``recall_qps.png`` to ``out_dir`` when given and returns
    ``{"rows", "table", "environment", "faiss_build", ...}``."""
    repeats = check_int(repeats, "--repeats", low=1)
    settings = list(sweep) if sweep else [{}]
    threads = threads if threads is not None else len(os.sched_getaffinity(0))
    with open_vectors(queries, default_dataset="test") as q:
        if q.d != index.d:
            raise InputError(f"the queries {q.name} have dimension {q.d}, the index {index.d}")
        Q, qname = q.read(), q.name
    truth = read_neighbors(gt, Q.shape[0])
    if truth.max() < 0:
        raise InputError("the ground truth holds no neighbour")
    k = min(check_int(k, "k", low=1), int(index.ntotal))
    load_before = os.getloadavg()
    environment = set_threads(threads)
    fi, faiss_build = None, None
    if against_faiss:
        fi, faiss_build = build_faiss(index, against_faiss, progress=progress)
    spec = index.spec or type(index).__name__
    rows, faiss_rows = [], {}
    warm = Q[:min(len(Q), 16)]
    for params in settings:
        index.search(warm, k, **params)
        ours = {"index": "deepcodes", "spec": spec, "params": _label(params), "setting": params}
        theirs = None
        if fi is not None:
            fparams = _set_faiss_params(fi, params)
            ours["faiss_params"] = _label(fparams)
            if ours["faiss_params"] not in faiss_rows:
                fi.search(warm, k)
                theirs = {"index": "faiss", "spec": against_faiss, "params": _label(fparams), "setting": fparams}
                faiss_rows[theirs["params"]] = theirs
        # Interleaved: ours, faiss, ours, faiss, ... so both see the same machine state.
        best_ours = best_theirs = np.inf
        for _ in range(repeats):
            t, out_ours = _timed(lambda p=params: index.search(Q, k, **p))
            best_ours = min(best_ours, t)
            if theirs is not None:
                t, out_theirs = _timed(lambda: fi.search(Q, k))
                best_theirs = min(best_theirs, t)
        ours.update(_recalls(np.asarray(out_ours[1]), truth))
        ours.update({"queries/s": len(Q) / best_ours, "seconds": best_ours})
        rows.append(ours)
        if theirs is not None:
            theirs.update(_recalls(np.asarray(out_theirs[1]), truth))
            theirs.update({"queries/s": len(Q) / best_theirs, "seconds": best_theirs})
            rows.append(theirs)
    _ratios(rows, faiss_rows)
    import numba

    environment.update(threading_layer=_threading_layer(numba), load_average_before=load_before,
                       load_average_after=os.getloadavg(), repeats=repeats, k=k)
    table = markdown_table([{**r, "queries/s": f"{r['queries/s']:.0f}"} for r in rows], COLUMNS, floatfmt=".4f")
    result = {"index": spec, "ntotal": int(index.ntotal), "d": int(index.d), "code_bytes": int(index.code_size),
              "queries": qname, "n_queries": int(Q.shape[0]), "against_faiss": against_faiss,
              "faiss_build": faiss_build, "environment": environment, "rows": rows, "table": table}
    if out_dir is not None:
        _write(Path(out_dir), result)
    return result


def _ratios(rows: list[dict], faiss_rows: dict) -> None:
    """``vs faiss``: our queries/s over faiss's at the parameters faiss shares (faiss rows: None)."""
    for r in rows:
        match = faiss_rows.get(r.get("faiss_params")) if r["index"] == "deepcodes" else None
        r["vs faiss"] = None if match is None else f"{r['queries/s'] / match['queries/s']:.2f}x"


def _threading_layer(numba) -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel numba function has run in this process
        return f"not started (configured: {numba.config.THREADING_LAYER})"


def _write(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = result["environment"]
    caption = (f"{result['index']}: {result['ntotal']} vectors of {result['d']} dimensions, {result['code_bytes']} "
               f"bytes a code, {result['n_queries']} queries ({result['queries']}), k={env['k']}; best of "
               f"{env['repeats']} interleaved runs on {env['threads']} thread(s), OMP_WAIT_POLICY "
               f"{env['omp_wait_policy']}, numba layer {env['threading_layer']}, load average "
               f"{env['load_average_before'][0]:.2f} before / {env['load_average_after'][0]:.2f} after.\n")
    (out / "bench.md").write_text(result["table"] + "\n" + caption)
    write_json(out / "bench.json", {k: v for k, v in result.items() if k != "table"})
    curves = {}
    for r in result["rows"]:
        c = curves.setdefault(f"{r['index']} {r['spec']}", {"method": f"{r['index']} {r['spec']}",
                                                             "recall": [], "qps": []})
        c["recall"].append(r.get("R@10", r.get("R@1")))
        c["qps"].append(r["queries/s"])
    plot_recall_qps(list(curves.values()), out / "recall_qps.png",
                    f"{result['index']}, {result['ntotal']} vectors", xlabel="R@10")
