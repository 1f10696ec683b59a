"""The ``deepcodes`` command line: datasets, fit, evaluate, verify, demo, reproduce, data.

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
}
DATA_BUILDERS = {
    "sift1m-cifar": "deepcodes.data.sift_cifar",
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
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress messages.")):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")


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
        protocol: str = typer.Option(..., "--protocol", "-p", help="Protocol whose training set to fit on."),
        output: Path = typer.Option(..., "--output", "-o", help="Model file to write."),
        seed: int = typer.Option(0, "--seed", help="random_state of the coder."),
        quantizer: Optional[str] = typer.Option(None, "--quantizer", help="Quantizer family for methods that take one."),
        device: Optional[str] = typer.Option(None, "--device", help="torch device for deep methods (cpu, cuda)."),
        option: list[str] = typer.Option([], "--option", help="Extra coder parameter key=value (repeatable)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Fit METHOD at --bits on the training set of --protocol and save it to --output."""
    from .persist import check_save_target
    from .pipeline import fit_method

    check_save_target(output)       # before minutes of training, not after
    options = _parse_options(option)
    if quantizer is not None:
        options["quantizer"] = quantizer
    if device is not None:
        options["device"] = device
    coder = fit_method(method, bits, protocol, random_state=seed, **options)
    coder.save(output)
    info = dict(coder.meta_, output=str(output))
    if as_json:
        _emit_json(info)
    else:
        console.print(f"fitted {method} ({bits} bits) on {protocol} in {info['fit_seconds']:.1f}s -> {output}")


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
    for key, label in (("one_recall_at_R", "1-recall@{}"), ("R_recall_at_R", "{0}-recall@{0}")):
        for k, v in result.get(key, {}).items():
            table.add_row(label.format(k), f"{v:.4f}")
    if "precision_radius2" in result:
        table.add_row("precision (Hamming radius <= 2)", f"{result['precision_radius2']:.4f}")
    table.caption = (f"{result['n_queries']} queries, {result['n_database']} database items; "
                     f"ties: {result['tie_rule']}")
    return table


@app.command()
def evaluate(model: Path = typer.Argument(..., help="Model file written by `deepcodes fit`."),
             protocol: str = typer.Option(..., "--protocol", "-p", help="Protocol to evaluate on."),
             as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
             progress: bool = typer.Option(True, help="Show a progress bar.")):
    """Encode the protocol's database and queries with MODEL, rank, and print the metrics."""
    from . import persist
    from .pipeline import evaluate_coder

    coder = persist.load(model)
    if not hasattr(coder, "encode"):
        raise InputError(f"{model} holds a {type(coder).__name__}, not a coder")
    result = evaluate_coder(coder, protocol, progress=progress and not as_json)
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
              schedule: str = typer.Option("default", "--schedule", help="default, or paper: the authors' training length.")):
    """Run a paper's comparison and write a markdown table, JSON and plots."""
    from .reproduce import SCHEDULES, ReproduceOptions

    if name not in REPRODUCTIONS:
        raise InputError(f"unknown reproduction {name!r}; choose one of: {', '.join(REPRODUCTIONS)}")
    if schedule not in SCHEDULES:
        raise InputError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {seeds}")
    module = importlib.import_module(REPRODUCTIONS[name])
    options = ReproduceOptions(quick=quick, seeds=seeds, progress=progress, device=device, schedule=schedule)
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
