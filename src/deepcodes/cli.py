"""The ``deepcodes`` command line: datasets, fit, evaluate, verify, demo, reproduce, data, and the index
files: build, add, remove, search, info, bench, export.

Error policy (one place, :class:`UserErrorsExit2`): any :class:`~deepcodes.errors.DeepcodesError`
a command raises, and any OS error about a path (missing, unreadable, not writable, disk full),
becomes one line on stderr and exit status 2. Commands just raise; they never catch broad
exception types, so a genuine bug still shows its traceback (exit status 1).
"""
from __future__ import annotations

import importlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from .errors import DeepcodesError, InputError
from .indexing import DEFAULT_MAX_TRAIN
from .methods import SET_BY_COMMAND
from .threads import set_num_threads


class UserErrorsExit2(TyperGroup):
    """Runs a command; a DeepcodesError or an OS error (about a file the user named, or the disk)
    becomes one line on stderr and exit status 2. Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DeepcodesError as exc:
            _fail(exc)
        except BrokenPipeError:
            raise
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename is not None else ""
            where += f" -> {exc.filename2}" if exc.filename2 is not None else ""
            _fail(f"{exc.strerror or exc}{where}")


app = typer.Typer(add_completion=False, no_args_is_help=True, cls=UserErrorsExit2,
                  help="Learn compact codes (binary hashing, vector quantization) and search them.")
console = Console()
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

# Reproductions and dataset builders live in their own modules, each exposing
# ``run(out_dir: Path, options: ReproduceOptions) -> dict`` (reproductions) or
# ``build(out_dir: Path | None, progress: bool) -> dict`` (datasets); imported only when asked for.
REPRODUCTIONS = {
    "bdnn": "deepcodes.reproduce.bdnn",
    "gsl": "deepcodes.reproduce.gsl",
    "supervised": "deepcodes.reproduce.supervised",
}
DATA_BUILDERS = {
    "sift1m-cifar": "deepcodes.data.sift_cifar",
    "sift10k-hdf5": "deepcodes.data.sift10k_hdf5",
}


def _emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")


def _fail(exc: Exception | str) -> None:
    """Print ``error: <message>`` as one line on stderr and exit with status 2."""
    message = " ".join(str(exc).split())
    err_console.print(Text.assemble(("error: ", "bold red"), message))
    raise typer.Exit(code=2)


def _parse_options(options: list[str]) -> dict:
    """``key=value`` strings to a dict; values parsed as JSON where they can be (numbers, lists, bools)."""
    out = {}
    for item in options:
        if "=" not in item:
            raise InputError(f"--option takes key=value, got {item!r}")
        key, value = item.split("=", 1)
        if key in SET_BY_COMMAND:
            raise InputError(f"{key} is set by {SET_BY_COMMAND[key]}, not by --option")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress messages."),
          threads: Optional[int] = typer.Option(None, "--threads", help="Threads for numba, faiss, BLAS and torch "
                                                "(default: DEEPCODES_NUM_THREADS, else every core).")):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    if threads is not None:
        try:
            set_num_threads(threads)
        except DeepcodesError as exc:
            _fail(exc)


@app.command()
def datasets(as_json: bool = typer.Option(False, "--json", help="Print JSON."),
             verify: bool = typer.Option(False, "--verify", help="Check every file's sha256 (slower).")):
    """The bundled datasets and evaluation protocols, and whether each is present."""
    from .data import PROTOCOLS, data_dir, dataset_status

    try:
        where = str(data_dir())
    except DeepcodesError as exc:
        where = f"(not found: {exc})"
    status = dataset_status(verify=verify)
    if as_json:
        _emit_json({"data_dir": where, "datasets": status, "protocols": PROTOCOLS})
        return
    console.print(f"data folder: {where}")
    table = Table("dataset", "present", "verified", "description")
    for row in status:
        table.add_row(row["name"], "yes" if row["present"] else "[red]no[/]",
                      "yes" if row["verified"] else "-", row["description"])
    console.print(table)
    ptable = Table("protocol", "description")
    for name, text in PROTOCOLS.items():
        ptable.add_row(name, text)
    console.print(ptable)


@app.command()
def fit(method: str = typer.Argument(..., help="Method name (see `deepcodes methods`)."),
        bits: int = typer.Option(..., "--bits", "-b", help="Code length in bits (code size for quantizers)."),
        output: Path = typer.Option(..., "--output", "-o", help="Model file to write."),
        protocol: Optional[str] = typer.Option(None, "--protocol", "-p", help="Protocol whose training set to fit on."),
        data: Optional[str] = typer.Option(None, "--data", help="Or: a vector file to fit on (npy, fvecs/bvecs, "
                                           "FILE.hdf5[:dataset], text)."),
        labels: Optional[Path] = typer.Option(None, "--labels", help="Labels of the --data rows (npy or one a line)."),
        max_train: Optional[int] = typer.Option(None, "--max-train", help="Train on a seeded sample of at most N rows."),
        seed: int = typer.Option(0, "--seed", help="random_state of the coder."),
        quantizer: Optional[str] = typer.Option(None, "--quantizer", help="Quantizer family for methods that take one."),
        device: Optional[str] = typer.Option(None, "--device", help="torch device for deep methods (cpu, cuda)."),
        option: list[str] = typer.Option([], "--option", help="Extra coder parameter key=value (repeatable)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Fit METHOD at --bits on the training set of --protocol (or on --data) and save it to --output."""
    from .persist import check_save_target
    from .pipeline import fit_coder, fit_method

    check_save_target(output)       # before minutes of training, not after
    try:
        options = _parse_options(option)
        if quantizer is not None:
            options["quantizer"] = quantizer
        if device is not None:
            options["device"] = device
        if (protocol is None) == (data is None):
            raise InputError("give exactly one of --protocol and --data")
        if labels is not None and data is None:
            raise InputError("--labels goes with --data (a protocol has its own labels)")
        if data is None:
            coder = fit_method(method, bits, protocol, random_state=seed, max_train=max_train, **options)
        else:
            coder = _fit_on_file(fit_coder, method, bits, data, labels, max_train, seed, options)
        coder.save(output)
    except DeepcodesError as exc:
        _fail(exc)
    info = dict(coder.meta_, output=str(output))
    if as_json:
        _emit_json(info)
    else:
        console.print(f"fitted {method} ({bits} bits) on {info['protocol']} ({info['n_train']} rows) in "
                      f"{info['fit_seconds']:.1f}s -> {output}")


def _fit_on_file(fit_coder, method, bits, data, labels, max_train, seed, options):
    """Fit on a seeded sample of at most ``max_train`` rows of the vector file ``data``."""
    from .data.vectors import open_vectors, read_labels

    with open_vectors(data) as vectors:
        y = read_labels(labels, vectors.n)[0] if labels is not None else None
        X, rows = vectors.sample(max_train, random_state=seed)
        coder = fit_coder(method, bits, X, None if y is None else y[rows], trained_on=vectors.name,
                          random_state=seed, max_train=max_train, **options)
        coder.meta_.update(data=str(data), n_available=vectors.n)
    return coder


@app.command()
def methods(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """The methods `fit` knows."""
    from .methods import METHODS

    if as_json:
        _emit_json({m.name: {"description": m.description, "supervised": m.supervised} for m in METHODS.values()})
        return
    table = Table("method", "supervised", "description")
    for m in METHODS.values():
        table.add_row(m.name, "yes" if m.supervised else "no", m.description)
    console.print(table)


def _metrics_table(result: dict) -> Table:
    table = Table("metric", "value", title=f"{result['method']} {result['bits']} bits on {result['protocol']}")
    table.add_row("mAP", f"{result['map']:.4f}")
    for k, v in result["map_at_k"].items():
        table.add_row(f"mAP@{k}", f"{v:.4f}")
    for k, v in result["precision_at_k"].items():
        table.add_row(f"precision@{k}", f"{v:.4f}")
    for k, v in result["recall_at_R"].items():
        table.add_row(f"recall@{k}", f"{v:.4f}")
    for k, v in result.get("one_recall_at_R", {}).items():
        table.add_row(f"1-recall@{k}", f"{v:.4f}")
    for k, v in result.get("R_recall_at_R", {}).items():
        if k != "1":  # R-recall@R at R = 1 is 1-recall@1, already printed
            table.add_row(f"{k}-recall@{k}", f"{v:.4f}")
    if "precision_radius2" in result:
        table.add_row("precision (Hamming radius <= 2)", f"{result['precision_radius2']:.4f}")
    table.caption = (f"{result['n_queries']} queries, {result['n_database']} database items; "
                     f"ties: {result['tie_rule']}")
    return table


@app.command()
def evaluate(model: Path = typer.Argument(..., help="Model file written by `deepcodes fit`."),
             protocol: Optional[str] = typer.Option(None, "--protocol", "-p", help="Protocol to evaluate on."),
             data: Optional[str] = typer.Option(None, "--data", help="Or: the vectors to rank (any vector file)."),
             queries: Optional[str] = typer.Option(None, "--queries", help="Query vectors for --data "
                                                  "(default for HDF5: its 'test' set)."),
             gt: Optional[str] = typer.Option(None, "--gt", help="Exact neighbour rows of each query (ivecs, npy, "
                                              "HDF5 'neighbors'); computed when absent."),
             labels: Optional[Path] = typer.Option(None, "--labels", help="Labels of the --data rows: class relevance."),
             query_labels: Optional[Path] = typer.Option(None, "--query-labels", help="Labels of the queries."),
             as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
             progress: bool = typer.Option(True, help="Show a progress bar.")):
    """Encode the database and queries (of --protocol, or --data and --queries) with MODEL, rank, and print the metrics."""
    from . import persist
    from .pipeline import evaluate_coder

    try:
        if (protocol is None) == (data is None):
            raise InputError("give exactly one of --protocol and --data")
        if data is None and any(x is not None for x in (queries, gt, labels, query_labels)):
            raise InputError("--queries, --gt, --labels and --query-labels go with --data")
        coder = persist.load(model)
        if not hasattr(coder, "encode"):
            raise InputError(f"{model} holds a {type(coder).__name__}, not a coder")
        if data is not None:
            from .data.file_protocol import protocol_from_files

            protocol = protocol_from_files(data, queries, gt=gt, labels=labels, query_labels=query_labels)
        result = evaluate_coder(coder, protocol, progress=progress and not as_json)
    except DeepcodesError as exc:
        _fail(exc)
    result["model"] = str(model)
    if as_json:
        _emit_json(result)
    else:
        console.print(_metrics_table(result))


@app.command()
def verify(path: Path = typer.Argument(..., help="A model or index file written by deepcodes."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Check FILE completely: the metadata checksum, every array's SHA-256 and the saved state, as a
    load does. Exit status 0 when intact, 2 (with the defect on stderr) otherwise."""
    from . import persist

    report = persist.verify(path)
    if as_json:
        _emit_json(report)
    else:
        typer.echo(f"{path}: ok ({report['class']}, format version {report['format_version']}, "
                   f"{report['arrays']} arrays, {report['bytes']} bytes; checksums and state verified)")


def _int_list(text: str, what: str) -> list[int]:
    try:
        return [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got {text!r}") from None


@app.command()
def demo(out: Path = typer.Option(Path("demo-results"), "--out", help="Folder for results.json, table and plot."),
         bits: str = typer.Option("16,32,64", help="Comma-separated code lengths."),
         methods_: str = typer.Option("lsh,itq,pq,opq,rq", "--methods", help="Comma-separated methods."),
         seed: int = typer.Option(0, "--seed")):
    """Fit every shallow coder at 16/32/64 bits on MNIST and evaluate on mnist-unsup and mnist-sup."""
    from .demo import run_demo

    bit_list = _int_list(bits, "--bits")
    method_list = [m for m in methods_.split(",") if m]
    started = time.perf_counter()
    summary = run_demo(out, method_list, bit_list, seed=seed, console=console)
    typer.echo(summary["table"])
    console.print(f"wrote {out}/results.json, {out}/results.md and {out}/map_vs_bits.png "
                  f"in {time.perf_counter() - started:.0f}s")


@app.command()
def reproduce(name: str = typer.Argument(..., help=f"One of: {', '.join(REPRODUCTIONS)}."),
              out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default reproduce-NAME)."),
              quick: bool = typer.Option(False, "--quick", help="One seed, one code length: minutes."),
              seeds: int = typer.Option(3, "--seeds", help="Seeds per configuration."),
              progress: bool = typer.Option(True, help="Show progress."),
              device: str = typer.Option("cpu", "--device", help="torch device for the deep coders (cpu, cuda)."),
              schedule: str = typer.Option("default", "--schedule", help="default, or paper: the authors' training length."),
              protocol: Optional[list[str]] = typer.Option(None, "--protocol", help="Only this protocol (repeatable)."),
              bits: Optional[list[int]] = typer.Option(None, "--bits", help="Only this code length (repeatable)."),
              method: Optional[list[str]] = typer.Option(None, "--method", help="Only this method (repeatable; bdnn).")):
    """Run a paper's comparison and write a markdown table, JSON and plots."""
    from .reproduce import SCHEDULES, ReproduceOptions

    if name not in REPRODUCTIONS:
        raise InputError(f"unknown reproduction {name!r}; choose one of: {', '.join(REPRODUCTIONS)}")
    if schedule not in SCHEDULES:
        raise InputError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {seeds}")
    try:
        module = importlib.import_module(REPRODUCTIONS[name])
    except ModuleNotFoundError:
        raise InputError(f"reproduction {name!r} is not available in this version") from None
    options = ReproduceOptions(quick=quick, seeds=seeds, progress=progress, device=device, schedule=schedule,
                               protocols=tuple(protocol or ()), bits=tuple(bits or ()), methods=tuple(method or ()))
    summary = module.run(out or Path(f"reproduce-{name}"), options)
    if summary.get("table"):
        typer.echo(summary["table"])


@app.command()
def data(name: str = typer.Argument(..., help=f"Dataset to build: {', '.join(DATA_BUILDERS)}."),
         out: Optional[Path] = typer.Option(None, "--out", help="Folder (default: the cache folder)."),
         progress: bool = typer.Option(True, help="Show progress.")):
    """Build (and cache) a derived dataset from the bundled data."""
    if name not in DATA_BUILDERS:
        raise InputError(f"unknown dataset {name!r}; choose one of: {', '.join(DATA_BUILDERS)}")
    info = importlib.import_module(DATA_BUILDERS[name]).build(out, progress=progress)
    _emit_json(info)


# ----------------------------------------------------------------------------- index files
# build / add / remove / search / info / bench / export: their flags are an interface scripts call.
# The work is in deepcodes.indexing and deepcodes.benchmark; these wrappers parse and print.


@app.command()
def build(spec: str = typer.Argument(..., help="Factory string, e.g. IVF1024,PQ16 (README: the token table)."),
          train: str = typer.Option(..., "--train", help="Training vectors (npy, fvecs/bvecs/ivecs, FILE.hdf5[:dataset] "
                                    "(default 'train'), text)."),
          output: Path = typer.Option(..., "--output", "-o", help="Index file to write."),
          labels: Optional[Path] = typer.Option(None, "--labels", help="Labels of the training rows, for supervised parts."),
          base: Optional[str] = typer.Option(None, "--base", help="Vectors to index (default: the training file)."),
          ids: Optional[Path] = typer.Option(None, "--ids", help="One id a base row (npy or one integer a line); "
                                             "default 0..n-1."),
          max_train: int = typer.Option(DEFAULT_MAX_TRAIN, "--max-train", help="Train on a seeded sample of at most N rows."),
          seed: int = typer.Option(0, "--seed", help="Seed of the training sample and of every part (k-means, PQ, ITQ, ...)."),
          progress: bool = typer.Option(True, help="Show progress bars."),
          as_json: bool = typer.Option(False, "--json", help="Print the index description as JSON."),
          shards: Optional[int] = typer.Option(None, "--shards", help="Write -o as a folder of N durable "
                                               "shards (ids routed by hash) for `serve --ray`.")):
    """Train the index SPEC on --train, add --base (streamed in batches) and save it to -o."""
    from .indexing import build_index, describe_index

    try:
        started = time.perf_counter()
        index = build_index(spec, train, labels=labels, base=base, ids=ids, max_train=max_train, seed=seed,
                            progress=progress and not as_json)
        if shards is not None:
            from .cluster import ShardedIndex

            ShardedIndex.split(index, output, shards)
        else:
            index.save(output, meta=index.meta_)
        info = describe_index(index, None if shards is not None else output)
    except DeepcodesError as exc:
        _fail(exc)
    if as_json:
        _emit_json(info)
    else:
        trained = info["trained_on"]
        console.print(f"built {spec}: {info['ntotal']} vectors, trained on {trained['n_train']} of "
                      f"{trained['n_available']} rows, in {time.perf_counter() - started:.1f}s -> {output}")


@app.command()
def add(index_file: Path = typer.Argument(..., metavar="INDEX", help="Index file (rewritten atomically)."),
        base: str = typer.Option(..., "--base", help="Vectors to add (any vector file)."),
        ids: Optional[Path] = typer.Option(None, "--ids", help="Their ids (default: consecutive after the stored ones)."),
        progress: bool = typer.Option(True, help="Show a progress bar.")):
    """Add the vectors of --base to INDEX; on any error the file is unchanged."""
    from .indexing import add_file

    try:
        info = add_file(index_file, base, ids, progress=progress)
    except DeepcodesError as exc:
        _fail(exc)
    console.print(f"added {info['added']} vectors to {index_file}: {info['ntotal']} in all")


@app.command()
def remove(index_file: Path = typer.Argument(..., metavar="INDEX", help="Index file (rewritten atomically)."),
           ids: Path = typer.Option(..., "--ids", help="Ids to remove (npy or one integer a line).")):
    """Remove the listed ids from INDEX, all or nothing: an id that is not stored changes nothing."""
    from .indexing import remove_ids

    try:
        info = remove_ids(index_file, ids)
    except DeepcodesError as exc:
        _fail(exc)
    console.print(f"removed {info['removed']} vectors from {index_file}: {info['ntotal']} left")


@app.command()
def search(index_file: Path = typer.Argument(..., metavar="INDEX", help="Index file."),
           queries: str = typer.Option(..., "--queries", help="Query vectors (an HDF5 file: its 'test' set)."),
           k: int = typer.Option(..., "-k", "--k", help="Neighbours a query."),
           param: list[str] = typer.Option([], "--param", help="Search parameter name=value, e.g. nprobe=16 (repeatable)."),
           output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write ids (nq, k) int64 and distances "
                                                 "(nq, k) float32 (and keys) to this .npz."),
           as_json: bool = typer.Option(False, "--json", help='Print {"ids": [[...]], "distances": [[...]]}.'),
           progress: bool = typer.Option(False, help="Show a progress bar.")):
    """k nearest stored vectors of every query, in (distance, id) order."""
    import numpy as np

    from .indexing import load_index, parse_params, search_file
    from .persist import atomic_path

    try:
        params = parse_params(param)
        index = load_index(index_file)
        started = time.perf_counter()
        result = search_file(index, queries, k, params, progress=progress)
        seconds = time.perf_counter() - started
        arrays = {"ids": result["ids"], "distances": result["distances"]}
        if result["keys"] is not None:
            arrays["keys"] = result["keys"]
        if output is not None:
            with atomic_path(output) as tmp, open(tmp, "wb") as f:
                np.savez(f, **arrays)
    except DeepcodesError as exc:
        _fail(exc)
    if as_json:
        _emit_json({name: arr.tolist() for name, arr in arrays.items()})
        return
    nq = result["ids"].shape[0]
    console.print(f"{nq} queries, k={k}, {_params_text(params)}: {seconds:.2f}s ({nq / seconds:.0f} queries/s)"
                  + (f" -> {output}" if output is not None else ""))
    shown = arrays.get("keys", result["ids"])
    for row in range(min(nq, 5)):
        console.print(f"  query {row}: " + " ".join(str(v) for v in shown[row][:10]) + (" ..." if k > 10 else ""))


def _params_text(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "default parameters"


@app.command()
def info(index_file: Path = typer.Argument(..., metavar="INDEX", help="Index file."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """What INDEX holds: spec, size, bytes per vector, what it was trained on and filled from."""
    from .indexing import describe_index, load_index

    try:
        description = describe_index(load_index(index_file), index_file)
    except DeepcodesError as exc:
        _fail(exc)
    if as_json:
        _emit_json(description)
        return
    table = Table("field", "value", title=str(index_file))
    for key, value in description.items():
        table.add_row(key, value if isinstance(value, str) else json.dumps(value, default=str))
    console.print(table)


@app.command()
def bench(index_file: Path = typer.Argument(..., metavar="INDEX", help="Index file."),
          queries: str = typer.Option(..., "--queries", help="Query vectors (an HDF5 file: its 'test' set)."),
          gt: str = typer.Option(..., "--gt", help="Exact neighbour ids (ivecs, npy, HDF5: its 'neighbors')."),
          sweep: list[str] = typer.Option([], "--sweep", help="Parameter values to try, e.g. nprobe=1,2,4,8,16 (repeatable: "
                                          "every combination)."),
          against_faiss: Optional[str] = typer.Option(None, "--against-faiss", help="faiss factory string of the same "
                                                      "bytes per vector, built in this run from the same files."),
          out: Optional[Path] = typer.Option(None, "--out", help="Folder for bench.md, bench.json, recall_qps.png "
                                             "(default bench-INDEX)."),
          threads: Optional[int] = typer.Option(None, "--threads", help="Threads for both sides (default: every core)."),
          repeats: int = typer.Option(3, "--repeats", help="Timed runs per setting (the best counts)."),
          progress: bool = typer.Option(True, help="Show progress while building the faiss index.")):
    """Recall@1/10/100 and queries/s of INDEX for every sweep setting, and of faiss at equal bytes."""
    from .benchmark import parse_sweep, run_bench
    from .indexing import load_index

    out = out if out is not None else Path(f"bench-{index_file.stem}")
    try:
        settings = parse_sweep(sweep)
        index = load_index(index_file)
        result = run_bench(index, queries, gt, sweep=settings, against_faiss=against_faiss, out_dir=out,
                           threads=threads, repeats=repeats, progress=progress)
    except DeepcodesError as exc:
        _fail(exc)
    env = result["environment"]
    typer.echo(result["table"])
    typer.echo(f"threads {env['threads']}, OMP_WAIT_POLICY {env['omp_wait_policy']}, numba layer "
               f"{env['threading_layer']}, load average {env['load_average_before'][0]:.2f} before / "
               f"{env['load_average_after'][0]:.2f} after; wrote {out}/bench.md, bench.json, recall_qps.png")


@app.command()
def export(index_file: Path = typer.Argument(..., metavar="INDEX", help="Index file."),
           faiss_out: Path = typer.Option(..., "--faiss", help="faiss index file to write (faiss.read_index reads it).")):
    """Write INDEX as a faiss index with the same codes and ids, where faiss has the structure."""
    from .indexing import load_index
    from .interop.faiss_export import write_faiss

    try:
        index = load_index(index_file)
        write_faiss(index, faiss_out)
    except DeepcodesError as exc:
        _fail(exc)
    console.print(f"wrote {faiss_out}: {index.ntotal} vectors of {index_file} as a faiss index")


@app.command()
def serve(index: Path = typer.Argument(..., help="Index file (or, with --ray, a folder from `build --shards`)."),
          host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback by default)."),
          port: int = typer.Option(8000, "--port", help="TCP port."),
          token: Optional[str] = typer.Option(None, "--token", envvar="DEEPCODES_TOKEN",
                                              help="Require 'Authorization: Bearer TOKEN' (all but /healthz)."),
          data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Snapshots and write-ahead log "
                                                  "(default INDEX.service)."),
          ray: Optional[str] = typer.Option(None, "--ray", help="Ray address ('auto', 'local' or "
                                            "HOST:PORT) to serve a sharded index from."),
          gallery: Optional[Path] = typer.Option(None, "--gallery", help="Raw vectors of the indexed items "
                                                 "(for the page's images and the measured recall)."),
          labels: Optional[Path] = typer.Option(None, "--labels", help="Labels of the --gallery rows."),
          ids: Optional[Path] = typer.Option(None, "--ids", help="Ids of the --gallery rows (default 0..n-1)."),
          max_batch: int = typer.Option(10_000, "--max-batch", help="Most vectors or queries in one request."),
          max_k: int = typer.Option(1000, "--max-k", help="Largest k."),
          max_body_mb: int = typer.Option(64, "--max-body-mb", help="Largest request body (MiB)."),
          snapshot_every: int = typer.Option(20000, "--snapshot-every", help="Snapshot after this many changes..."),
          snapshot_interval: float = typer.Option(30.0, "--snapshot-interval", help="...or this many seconds "
                                                  "after the first unsnapshotted change.")):
    """Serve INDEX over HTTP: JSON search/add/delete, a web page, Prometheus metrics; durable."""
    import os

    # One kernel thread per request: a service answers many small requests at once, and a thread
    # team per request only contends (a single-query search took 18.7 ms with 2 numba threads on the
    # shared 2-core machine, 0.59 ms with 1). Set before numba is first imported.
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    from .service.app import Limits
    from .service.server import gallery_from_files, serve as run_service

    try:
        if gallery is None and (labels is not None or ids is not None):
            raise InputError("--labels and --ids describe the --gallery rows: give --gallery too")
        rows = gallery_from_files(gallery, labels, ids) if gallery is not None else None
        run_service(index, host=host, port=port, token=token, data_dir=data_dir, ray_address=ray,
                    gallery=rows, limits=Limits(max_body_mb << 20, max_batch, max_k),
                    snapshot_every=snapshot_every, snapshot_interval=snapshot_interval)
    except DeepcodesError as exc:
        _fail(exc)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
