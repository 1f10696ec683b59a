"""Load on the real service (loopback only, bounded): 32 concurrent clients for 60 s of mixed
single-query searches and single-vector adds against `deepcodes serve` holding the 60,000-item MNIST
database (mnist-unsup) as `ITQ64,Hamming`; then the same against the Ray-backed service with 2 shards.

    python bench/bench_service.py [--duration 60] [--clients 32] [--add-fraction 0.1] [--only single|ray]

Prints requests/s, p50/p99 latency per kind and the errors, with the load average before and after
(the machine is shared: a load average above the core count means other work ran at the same time).
Clients and server share the machine's cores; every latency is a full HTTP round trip; the
server-side column is the bound read from the service's own /metrics histogram (time inside the
server), and the CPU seconds say how much of the 2 cores the server and the client got.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "results"


def build(folder: Path, shards: int | None):
    """The ITQ64 Hamming index of mnist-unsup's database (ids 0..59999); sharded when asked."""
    from deepcodes import index_factory
    from deepcodes.cluster import ShardedIndex
    from deepcodes.data import load_protocol

    p = load_protocol("mnist-unsup")
    index = index_factory(p.train.shape[1], "ITQ64,Hamming", random_state=0).train(p.train)
    index.add(p.database)
    if shards:
        return ShardedIndex.split(index, folder / "mnist-sharded", shards), p
    index.save(folder / "mnist.dcx")
    return folder / "mnist.dcx", p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(index: Path, data: Path | None, ray: bool, log: Path):
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "deepcodes.cli", "serve", str(index), "--port", str(port)]
    cmd += ["--ray", "local"] if ray else ["--data-dir", str(data)]
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start in 300 s")


class Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: a load client far lighter than httpx
    (about 14 ms of CPU per request with 32 httpx clients on this shared machine), so that the
    client does not take the server's cores."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def load(url: str, queries: np.ndarray, adds: np.ndarray, clients: int, duration: float,
               add_fraction: float, first_id: int) -> dict:
    host, port = url.removeprefix("http://").split(":")
    lat = {"search": [], "add": []}
    errors: dict[str, int] = {}
    next_id = [first_id]
    stop_at = time.monotonic() + duration
    # Bodies encoded once, so that the client spends its (shared) CPU on requests, not on JSON.
    search_bodies = [json.dumps({"vectors": [q.tolist()], "k": 10}).encode() for q in queries]
    add_rows = [json.dumps(a.tolist()) for a in adds]

    async def client(c: int):
        rng = np.random.default_rng(c)
        conn = Connection(host, int(port))
        while time.monotonic() < stop_at:
            if rng.random() < add_fraction:
                kind, item = "add", next_id[0]
                next_id[0] += 1
                body = f'{{"ids": [{item}], "vectors": [{add_rows[item % len(adds)]}]}}'.encode()
                path = "/items"
            else:
                kind, path = "search", "/search"
                body = search_bodies[rng.integers(len(queries))]
            t = time.perf_counter()
            try:
                status, reply = await asyncio.wait_for(conn.post(path, body), timeout=30)
                ok, why = status == 200, f"HTTP {status}"
                if ok and kind == "search":
                    ok, why = b'"results"' in reply, "no results in the reply"
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                ok, why = False, type(exc).__name__
                await conn.close()
                conn = Connection(host, int(port))
            if ok:
                lat[kind].append(time.perf_counter() - t)
            else:
                errors[f"{kind}: {why}"] = errors.get(f"{kind}: {why}", 0) + 1
        await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    elapsed = time.perf_counter() - start
    out = {"seconds": elapsed, "errors": errors,
           "requests_per_s": sum(len(v) for v in lat.values()) / elapsed}
    for kind, values in lat.items():
        v = np.array(values) * 1000
        out[kind] = {"count": int(v.size), "per_s": v.size / elapsed,
                     "p50_ms": float(np.percentile(v, 50)) if v.size else None,
                     "p99_ms": float(np.percentile(v, 99)) if v.size else None}
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_quantiles(metrics: str, endpoint: str) -> dict:
    """Upper bounds of the p50/p99 server-side latency (ms) from the /metrics histogram buckets."""
    buckets = []
    for line in metrics.splitlines():
        if line.startswith("deepcodes_request_seconds_bucket") and f'endpoint="{endpoint}"' in line:
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    out = {}
    for q in (50, 99):
        bound = next((le for le, count in buckets if count >= total * q / 100), None)
        out[f"p{q}_ms_at_most"] = None if bound is None or not np.isfinite(bound) else bound * 1000
    return out


def run(kind: str, args, folder: Path) -> dict:
    index, p = build(folder, 2 if kind == "ray" else None)
    load_before = os.getloadavg()
    proc, url = start(index, folder / "data", kind == "ray", folder / f"{kind}.log")
    try:
        rng = np.random.default_rng(0)
        adds = np.clip(p.queries + rng.normal(0, 0.01, p.queries.shape), 0, 1).astype(np.float32)
        server_cpu, client_cpu = cpu_seconds(proc.pid), time.process_time()
        result = asyncio.run(load(url, p.queries, adds, args.clients, args.duration, args.add_fraction,
                                  first_id=1_000_000))
        result["server_cpu_s"] = cpu_seconds(proc.pid) - server_cpu
        result["client_cpu_s"] = time.process_time() - client_cpu
        import httpx

        result["ntotal_after"] = httpx.get(url + "/stats", timeout=30).json()["ntotal"]
        metrics = httpx.get(url + "/metrics", timeout=30).text
        result["server_side"] = {"search": server_quantiles(metrics, "/search"),
                                 "add": server_quantiles(metrics, "/items")}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
    result.update(kind=kind, spec="ITQ64,Hamming", ntotal_before=len(p.database), clients=args.clients,
                  add_fraction=args.add_fraction, load_before=load_before, load_after=os.getloadavg(),
                  shards=2 if kind == "ray" else 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--add-fraction", type=float, default=0.1)
    ap.add_argument("--only", choices=["single", "ray"])
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    results = []
    for kind in ([args.only] if args.only else ["single", "ray"]):
        with tempfile.TemporaryDirectory(prefix="deepcodes-bench-") as tmp:
            results.append(run(kind, args, Path(tmp)))
    print("| service | req/s | search/s | search p50 ms | search p99 ms | server-side search p99 ms | add/s "
          "| add p50 ms | add p99 ms | errors | server / client CPU s in the run | load avg before -> after (1 min) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
    for r in results:
        s, a = r["search"], r["add"]
        name = "single index" if r["kind"] == "single" else "Ray, 2 shards"
        server_p99 = r["server_side"]["search"]["p99_ms_at_most"]
        print(f"| {name} | {r['requests_per_s']:.0f} | {s['per_s']:.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} "
              f"| <= {server_p99:g} | {a['per_s']:.0f} | {a['p50_ms']:.1f} | {a['p99_ms']:.1f} "
              f"| {sum(r['errors'].values())} {r['errors'] or ''} "
              f"| {r['server_cpu_s']:.1f} / {r['client_cpu_s']:.1f} of {r['seconds']:.0f} s "
              f"| {r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f} |")
    name = f"service_load{'_' + args.only if args.only else ''}.json"
    (OUT / name).write_text(json.dumps(results, indent=2))
    print(f"written {OUT / name}")


if __name__ == "__main__":
    main()
