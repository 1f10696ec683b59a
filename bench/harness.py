"""The one timing harness of the benchmarks: the same threads and OpenMP wait policy for us and the
peer, interleaved best-of-N timings, and a record of the machine's load.

Every benchmark compares our code with a peer (faiss) in one process, on the same data, with

* the same number of threads: numba (``NUMBA_NUM_THREADS`` and ``numba.set_num_threads``), faiss
  (``OMP_NUM_THREADS`` and ``faiss.omp_set_num_threads``) and every BLAS (threadpoolctl);
* the same OpenMP wait policy, ``OMP_WAIT_POLICY`` (numba's threading layer here is OpenMP too, so
  one variable governs both). GNU OpenMP reads it once, when it starts, so each policy runs in its
  own process: ``--wait-policy PASSIVE,ACTIVE`` starts one child process per policy;
* each search timed ``--repeats`` times (3 by default), the candidates taking turns, best time kept;
* the 1-minute load average read before and after every race (the machine is shared: a ratio
  measured while it changed a lot is marked in the reports).

Usage in a benchmark script::

    from harness import Harness
    h = Harness.from_args(args)          # args from Harness.add_arguments(parser)
    if h.is_parent:                      # one child process per policy; their reports come back
        reports = h.run_children(__file__, sys.argv[1:])
        ...                              # tables from reports, with load_note(reports)
        return
    best, results = h.race({"ours": f, "faiss": g})
    h.finish(rows)
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

POLICIES = ("PASSIVE", "ACTIVE")
_CHILD_FLAG = "--harness-child-out"


def load_average() -> float:
    """The 1-minute load average."""
    return float(os.getloadavg()[0])


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def thread_env(threads: int, policy: str) -> dict:
    """The environment a benchmark process starts with: every pool at ``threads``, one wait policy."""
    env = dict(os.environ)
    env.update({"OMP_WAIT_POLICY": policy, "OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads),
                "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "DEEPCODES_NUM_THREADS": str(threads)})
    return env


def describe_threads() -> dict:
    """What the process actually runs with: numba/faiss threads, every BLAS/OpenMP pool, the policy."""
    import faiss
    import numba
    from threadpoolctl import threadpool_info

    return {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "numba_threads": numba.get_num_threads(), "numba_layer": numba.config.THREADING_LAYER,
            "faiss_threads": faiss.omp_get_max_threads(), "faiss": faiss.__version__,
            "pools": [f"{p['internal_api']}:{Path(p['filepath']).name}={p['num_threads']}" for p in threadpool_info()],
            "cpu": _cpu_model(), "cores": len(os.sched_getaffinity(0))}


@dataclass
class Harness:
    threads: int
    policies: tuple[str, ...]
    repeats: int
    child_out: Path | None = None
    loads: list = field(default_factory=list)

    @staticmethod
    def add_arguments(parser) -> None:
        parser.add_argument("--threads", type=int, default=2, help="threads for numba, faiss and BLAS alike")
        parser.add_argument("--wait-policy", default="PASSIVE,ACTIVE",
                            help="OMP_WAIT_POLICY values, comma-separated; each runs in its own process")
        parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per timing (best kept)")
        parser.add_argument(_CHILD_FLAG, type=Path, default=None, help="(internal) where a child writes its rows")

    @classmethod
    def from_args(cls, args) -> "Harness":
        policies = tuple(p.strip().upper() for p in args.wait_policy.split(",") if p.strip())
        bad = [p for p in policies if p not in POLICIES]
        if bad or not policies:
            raise SystemExit(f"--wait-policy takes {', '.join(POLICIES)}, got {args.wait_policy!r}")
        h = cls(args.threads, policies, args.repeats, getattr(args, _CHILD_FLAG[2:].replace("-", "_")))
        if not h.is_parent:
            h._check_child()
        return h

    @property
    def is_parent(self) -> bool:
        return self.child_out is None

    @property
    def policy(self) -> str:
        return os.environ["OMP_WAIT_POLICY"]

    def _check_child(self) -> None:
        if os.environ.get("OMP_WAIT_POLICY") not in POLICIES:
            raise SystemExit("a benchmark child must be started by the harness (OMP_WAIT_POLICY unset)")
        import faiss
        import numba
        from threadpoolctl import threadpool_limits

        numba.set_num_threads(self.threads)
        faiss.omp_set_num_threads(self.threads)
        threadpool_limits(self.threads)

    def run_children(self, script: str, argv: list[str]) -> list[dict]:
        """Run ``script argv`` once per policy, each in a fresh process; return each child's report
        (``{"policy", "threads", "rows", ...}``) in policy order."""
        reports = []
        out_dir = Path(os.environ.get("TMPDIR", "/tmp"))
        for policy in self.policies:
            out = out_dir / f"harness-{os.getpid()}-{policy}.json"
            cmd = [sys.executable, script, *argv, "--wait-policy", policy, _CHILD_FLAG, str(out)]
            print(f"# {policy}: {' '.join(cmd[1:])}", flush=True)
            subprocess.run(cmd, env=thread_env(self.threads, policy), check=True)
            reports.append(json.loads(out.read_text()))
            out.unlink()
        return reports

    def race(self, fns: dict, repeats: int | None = None) -> tuple[dict, dict]:
        """Time each callable of ``fns`` (name -> fn) ``repeats`` times, taking turns; return
        ``(best seconds by name, last result by name)``. The load average before and after is kept."""
        best = {name: float("inf") for name in fns}
        results = {}
        before = load_average()
        for _ in range(repeats or self.repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                results[name] = fn()
                best[name] = min(best[name], time.perf_counter() - start)
        self.loads.append((before, load_average()))
        return best, results

    def last_load(self) -> tuple[float, float]:
        return self.loads[-1]

    def finish(self, rows: list[dict], **extra) -> dict:
        """A child's report: its rows, threads, policy and the load over the run; written for the parent."""
        loads = [x for pair in self.loads for x in pair] or [load_average()]
        report = {"policy": self.policy, "threads": self.threads, "repeats": self.repeats,
                  "load_min": min(loads), "load_max": max(loads), "env": describe_threads(), "rows": rows, **extra}
        self.child_out.write_text(json.dumps(report, indent=1, default=float))
        return report


def publish(out_dir: Path, stem: str, reports: list[dict], text: str) -> None:
    """Write ``stem.json`` (the children's reports) and ``stem.md`` (``text``) to ``out_dir``; print ``text``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(reports, indent=1, default=float))
    (out_dir / f"{stem}.md").write_text(text)
    print("\n" + text)


def load_note(reports: list[dict]) -> str:
    """One line for a report: threads, policies and the load average range of each policy's run."""
    return "; ".join(f"{r['policy']}: {r['threads']} threads, load {r['load_min']:.1f}-{r['load_max']:.1f}"
                     for r in reports)
