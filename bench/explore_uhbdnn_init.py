"""How much of UH-BDNN's gap to PCA-ITQ on mnist-unsup its initialisation makes (issue 10).

Fits UH-BDNN on the mnist-unsup training images and prints the validation mAP at the start and after
the last outer iteration, and the test mAP of the weights early stopping kept (``--n-outer 0``
keeps the start itself: the eigenvector-initialised network with its code layer fitted to the
PCA-ITQ codes). Variants, each replacing one piece of the library's initialisation for this run
only:

* ``--init authors``: the library's (the authors'): hidden layers are the top eigenvectors of their
  input's uncentred second moment, biases zero;
* ``--init centred``: the same eigenvectors of the covariance, with the bias that centres each
  unit's pre-activation; ``--scale s`` then scales each hidden layer so that its largest
  pre-activation standard deviation is s (small s keeps the sigmoids near their linear part);
* ``--target projections``: fit the code layer to ITQ's rotated projections (scaled to unit
  variance) instead of to the ±1 codes.

    python bench/explore_uhbdnn_init.py --bits 32 --init authors --n-outer 0 --itq
    python bench/explore_uhbdnn_init.py --bits 32 --init centred --scale 0.3 --n-outer 20

One torch thread (``DEEPCODES_NUM_THREADS=1`` is the setting these were run with).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import deepcodes.coders.bdnn as bdnn
import deepcodes.coders.deep as deep
from deepcodes.coders.itq import ITQ, itq_rotation, pca
from deepcodes.data.protocols import load_protocol
from deepcodes.pipeline import evaluate_coder


def centred_eigen_init(scale: float):
    """An ``eigen_init`` whose hidden layers are centred (and scaled when ``scale`` > 0).

    ``deep.eigen_init`` already centres its last layer (covariance eigenvectors, the bias that
    centres the outputs), so each layer here is a one-layer call of it on the previous layer's
    outputs."""
    one_layer = deep.eigen_init

    def init(X, sizes, activations, rng):
        weights, biases = [], []
        Z = X
        for layer, (size, act) in enumerate(zip(sizes, activations)):
            (W,), (c,) = one_layer(Z, (size,), (act,), rng)
            if scale > 0 and layer < len(sizes) - 1:
                # the bias is -mean @ W, so it scales with W
                factor = scale / max(float((Z @ torch.as_tensor(W[:, :1])).std()), 1e-6)
                W, c = (W * factor).astype(np.float32), (c * factor).astype(np.float32)
            weights.append(W)
            biases.append(c)
            with torch.no_grad():
                Z = deep.ACTIVATIONS[act](torch.addmm(torch.as_tensor(c), Z, torch.as_tensor(W)))
        return weights, biases
    return init


def start_from_projections(self, H, state):
    """UHBDNN's start with the code layer fitted to ITQ's rotated projections, not its codes."""
    X = state.X.cpu().numpy()
    mean, components = pca(X, self.n_bits)
    V = (X.astype(np.float64) - mean) @ components
    VR = V @ itq_rotation(V, int(self.itq_iter), state.rng)
    state.B = torch.as_tensor(np.where(VR >= 0, 1.0, -1.0), dtype=torch.float64, device=state.X.device)
    bdnn.fit_code_layer(state.net, state.X, torch.as_tensor(VR / VR.std(), dtype=torch.float64), self.lambda1)
    state.decoder = (torch.eye(X.shape[1], self.n_bits, dtype=torch.float64),
                     torch.zeros(X.shape[1], dtype=torch.float64))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bits", type=int, default=32)
    p.add_argument("--init", choices=["authors", "centred"], default="authors")
    p.add_argument("--scale", type=float, default=0.0)
    p.add_argument("--target", choices=["codes", "projections"], default="codes")
    p.add_argument("--hidden", default=None, help="n1,n2 (default: the library's)")
    p.add_argument("--n-outer", type=int, default=0)
    p.add_argument("--itq", action="store_true", help="also fit and evaluate PCA-ITQ")
    args = p.parse_args()
    if args.init == "centred":
        deep.eigen_init = centred_eigen_init(args.scale)
    if args.target == "projections":
        bdnn.UHBDNN._start = start_from_projections
    hidden = tuple(int(v) for v in args.hidden.split(",")) if args.hidden else None
    protocol = load_protocol("mnist-unsup")
    started = time.perf_counter()
    model = bdnn.UHBDNN(n_bits=args.bits, n_outer=args.n_outer, hidden=hidden, random_state=0).fit(protocol.train)
    fit_s = time.perf_counter() - started
    result = evaluate_coder(model, protocol)
    print(f"uh-bdnn init={args.init} scale={args.scale} target={args.target} hidden={hidden} "
          f"n_outer={args.n_outer} bits={args.bits}: validation mAP start {model.history_[0]['validation_map']:.4f}, "
          f"last {model.history_[-1]['validation_map']:.4f}; test mAP {result['map']:.4f}; fit {fit_s:.0f} s")
    if args.itq:
        itq = ITQ(n_bits=args.bits, random_state=0).fit(protocol.train)
        print(f"pca-itq bits={args.bits}: test mAP {evaluate_coder(itq, protocol)['map']:.4f}")


if __name__ == "__main__":
    main()
