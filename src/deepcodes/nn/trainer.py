"""The one training loop every variant shares: float, post-hoc, quantization loss and GSL differ
only in what ``codebook_at`` returns and in ``quant_weight`` / the snapping layer."""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .snapping import Codebook, GradientSnapping

log = logging.getLogger(__name__)


def train_network(encoder: nn.Module, loss_fn: nn.Module, X: torch.Tensor, y: torch.Tensor, *,
                  epochs: int, batch_size: int, lr: float, weight_decay: float = 0.0,
                  generator: torch.Generator, snap_layer: GradientSnapping | None = None,
                  quant_weight: float = 0.0,
                  codebook_at: Callable[[int], Codebook | None] | None = None,
                  progress: bool = False) -> list[dict]:
    """Train ``encoder`` (and ``loss_fn``'s own parameters) with Adam on ``(X, y)``, in place.

    At the start of every epoch ``codebook_at(epoch)`` gives the quantizer to be aware of (None:
    none); it goes to ``snap_layer`` (which then snaps the gradients) and, when ``quant_weight`` > 0,
    adds ``quant_weight * ||z - q(z)||²`` (q fixed, so its gradient moves z only) to the loss.
    Batches are drawn by ``generator`` (a CPU ``torch.Generator``). Returns one dict per epoch:
    mean loss, mean similarity loss, mean squared quantization error of the batches and the
    fraction of (sample, subspace) gradients that snapped.
    """
    params = list(encoder.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    n = X.shape[0]
    history = []
    for epoch in range(epochs):
        codebook = codebook_at(epoch) if codebook_at is not None else None
        if snap_layer is not None:
            snap_layer.codebook = codebook
        encoder.train()
        loss_fn.train()
        perm = torch.randperm(n, generator=generator).to(X.device)
        sums = np.zeros(4)
        steps = 0
        for start in tqdm(range(0, n, batch_size), disable=not progress, desc=f"epoch {epoch + 1}/{epochs}",
                          leave=False):
            idx = perm[start:start + batch_size]
            if len(idx) < 2:
                continue
            z = encoder(X[idx])
            # The quantization loss is taken before the snapping layer, which snaps only the
            # similarity gradient.
            sim = loss_fn(snap_layer(z) if snap_layer is not None else z, y[idx])
            loss = sim
            if codebook is not None:
                qerr = ((z - codebook.reconstruct(z.detach())) ** 2).sum(dim=1).mean()
                if quant_weight > 0:
                    loss = loss + quant_weight * qerr
                qerr = float(qerr.detach())
            else:
                qerr = float("nan")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            frac = snap_layer.last_snapped_fraction if (snap_layer is not None and codebook is not None) else 0.0
            sums += (float(loss.detach()), float(sim.detach()), qerr, frac)
            steps += 1
        means = sums / max(steps, 1)
        record = {"epoch": epoch + 1, "loss": means[0], "similarity_loss": means[1],
                  "batch_quantization_error": means[2] if codebook is not None else None,
                  "snapped_fraction": means[3]}
        history.append(record)
        log.info("epoch %d/%d: loss %.4f (similarity %.4f), quantization error %s, snapped %.2f",
                 epoch + 1, epochs, means[0], means[1],
                 "-" if codebook is None else f"{means[2]:.4f}", means[3])
    encoder.eval()
    loss_fn.eval()
    return history
