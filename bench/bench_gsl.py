"""How much the Gradient Snapping Layer adds to a training step (target: < 20%).

Times one Adam step (forward, classification loss, backward, update) of the reproduction's CNN on
MNIST-sized batches, and of an MLP, without the layer and with it snapping toward a fitted PQ, OPQ
or RQ codebook (256 codewords per sub-quantizer). Steps alternate between the configurations so
that load from other processes hits them alike; the median over repetitions is reported.

    python bench/bench_gsl.py [--bits 32] [--batch 128] [--steps 30] [--threads 1] [--out bench_gsl.json]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from deepcodes.coders import OPQ, PQ, RQ
from deepcodes.nn import GradientSnapping, build_backbone, build_loss
from deepcodes.nn.init import reset_parameters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    M = args.bits // 8
    results = []
    for backbone, in_dim in (("cnn", 784), ("mlp", 784)):
        net = reset_parameters(build_backbone(backbone, in_dim, 64), gen).to(args.device)
        loss = reset_parameters(build_loss("classification", 64, 10), gen).to(args.device)
        opt = torch.optim.Adam(list(net.parameters()) + list(loss.parameters()), lr=1e-4)
        X = torch.rand(4096, in_dim, generator=gen).to(args.device)
        y = torch.randint(0, 10, (4096,), generator=gen).to(args.device)
        with torch.no_grad():
            Z = net(X).cpu().numpy()
        layers = {"no layer": None}
        for name, q in (("pq", PQ(M=M, n_iter=5)), ("opq", OPQ(M=M, n_iter=5, n_outer=2)), ("rq", RQ(M=M, n_iter=5))):
            q.set_params(random_state=0).fit(Z)
            layers[f"{name} direction K=16"] = GradientSnapping(0.5, 16, "direction").set_quantizer(q, args.device)
            if name != "opq":
                layers[f"{name} landing"] = GradientSnapping(0.5, 16, "landing").set_quantizer(q, args.device)
        times = {k: [] for k in layers}
        for step in range(args.steps + 3):
            idx = torch.from_numpy(rng.choice(4096, args.batch, replace=False)).to(args.device)
            for name, layer in layers.items():
                if args.device != "cpu":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                z = net(X[idx])
                l = loss(layer(z) if layer is not None else z, y[idx])
                opt.zero_grad()
                l.backward()
                opt.step()
                if args.device != "cpu":
                    torch.cuda.synchronize()
                if step >= 3:
                    times[name].append(time.perf_counter() - t)
        base = float(np.median(times["no layer"]))
        for name, ts in times.items():
            med = float(np.median(ts))
            results.append({"backbone": backbone, "layer": name, "bits": args.bits, "batch": args.batch,
                            "median_step_ms": round(1000 * med, 3), "overhead_pct": round(100 * (med / base - 1), 1)})
            print(f"{backbone:4s} {name:22s} {1000 * med:8.2f} ms/step  {100 * (med / base - 1):+6.1f}%")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"threads": args.threads, "device": args.device, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
