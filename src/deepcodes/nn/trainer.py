"""The one training loop of every coder trained by Adam (GSL, DSH, DNNH, SuBiC).

A coder is a network, a loss and, optionally, quantization awareness (a codebook to snap gradients
toward or to add a quantization loss for) and a validator; the loop, its typed state and the
early stopping are shared. The validator is a callable the coder builds (on a split of the
*training* set, see :class:`deepcodes.coders.early_stopping.ValidationSplit`): it scores the
network after an epoch, and the weights of the best-scoring epoch are the ones kept.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..errors import InputError
from .snapping import Codebook, GradientSnapping

log = logging.getLogger(__name__)

LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """How to train: Adam with ``lr`` (decayed to 0 along a half cosine over all steps when
    ``lr_schedule="cosine"``), ``weight_decay``, mini-batches of ``batch_size`` for ``epochs``
    epochs; with a validator, stop after ``patience`` validations without improvement (None: never)."""

    epochs: int
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    patience: int | None = None
    progress: bool = False

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")


@dataclass
class EpochRecord:
    """What one epoch measured: mean total and similarity loss over its batches, mean squared
    quantization error of the batches (None without a codebook), the fraction of (sample,
    subspace) gradients that snapped, the validation score (None when not validated) and seconds."""

    epoch: int
    loss: float
    similarity_loss: float
    batch_quantization_error: float | None
    snapped_fraction: float
    validation_score: float | None
    seconds: float


@dataclass
class TrainState:
    """The loop's state: the epoch being trained (0-based), the codebook it is aware of, the
    history, and the best validated epoch (1-based; 0 = none yet) with its score and weights."""

    epoch: int = 0
    codebook: Codebook | None = None
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -math.inf
    best_weights: dict | None = None

    def history_dicts(self) -> list[dict]:
        return [asdict(r) for r in self.history]


def train_network(encoder: nn.Module, loss_fn: nn.Module, X: torch.Tensor, y: torch.Tensor,
                  config: TrainConfig, *, generator: torch.Generator,
                  snap_layer: GradientSnapping | None = None, quant_weight: float = 0.0,
                  codebook_at: Callable[[TrainState], Codebook | None] | None = None,
                  validate: Callable[[TrainState], float | None] | None = None,
                  augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None) -> TrainState:
    """Train ``encoder`` (and ``loss_fn``'s own parameters) with Adam on ``(X, y)``, in place.

    X (n, d) float32 and y (n,) int64 tensors on the training device. Every epoch:

    1. ``codebook_at(state)`` gives the quantizer to be aware of (None: none); it goes to
       ``snap_layer`` (which then snaps the similarity gradients) and, when ``quant_weight`` > 0,
       adds ``quant_weight * ||z - q(z)||²`` (q fixed, so its gradient moves z only);
    2. one pass over a permutation drawn by ``generator`` (a CPU ``torch.Generator``), batches
       passed through ``augment(batch, generator)`` when given;
    3. ``validate(state)`` (networks in eval mode) scores the epoch, higher is better, or returns
       None to skip it; the best-scoring epoch's weights of ``encoder`` and ``loss_fn`` are restored
       at the end (ties keep the earlier epoch).

    Returns the final :class:`TrainState`.
    """
    params = list(encoder.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    n = X.shape[0]
    steps_per_epoch = max(1, math.ceil(n / config.batch_size))
    scheduler = None
    if config.lr_schedule == "cosine" and config.epochs > 0:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * steps_per_epoch)
    state = TrainState()
    stale = 0
    for epoch in range(config.epochs):
        state.epoch = epoch
        started = time.perf_counter()
        state.codebook = codebook_at(state) if codebook_at is not None else None
        if snap_layer is not None:
            snap_layer.codebook = state.codebook
        encoder.train()
        loss_fn.train()
        sums = _run_epoch(encoder, loss_fn, X, y, config, generator, opt, scheduler, state.codebook,
                          snap_layer, quant_weight, augment, desc=f"epoch {epoch + 1}/{config.epochs}")
        encoder.eval()
        loss_fn.eval()
        score = validate(state) if validate is not None else None
        record = EpochRecord(epoch + 1, sums[0], sums[1], sums[2] if state.codebook is not None else None,
                             sums[3], score, round(time.perf_counter() - started, 3))
        state.history.append(record)
        if score is not None:
            if score > state.best_score:
                state.best_score, state.best_epoch, stale = float(score), epoch + 1, 0
                state.best_weights = {"encoder": _copy_weights(encoder), "loss": _copy_weights(loss_fn)}
            else:
                stale += 1
        log.info("epoch %d/%d: loss %.4f (similarity %.4f), quantization error %s, snapped %.2f, validation %s",
                 epoch + 1, config.epochs, record.loss, record.similarity_loss,
                 "-" if record.batch_quantization_error is None else f"{record.batch_quantization_error:.4f}",
                 record.snapped_fraction, "-" if score is None else f"{score:.4f}")
        if config.patience is not None and stale >= config.patience:
            log.info("early stop after epoch %d: no better validation score for %d epochs", epoch + 1, stale)
            break
    if state.best_weights is not None:
        encoder.load_state_dict(state.best_weights["encoder"])
        loss_fn.load_state_dict(state.best_weights["loss"])
    encoder.eval()
    loss_fn.eval()
    return state


def _run_epoch(encoder, loss_fn, X, y, config, generator, opt, scheduler, codebook, snap_layer, quant_weight,
               augment, desc) -> np.ndarray:
    """One pass over the data; returns the means of (loss, similarity loss, quantization error,
    snapped fraction) over its batches."""
    perm = torch.randperm(X.shape[0], generator=generator).to(X.device)
    sums = np.zeros(4)
    steps = 0
    for start in tqdm(range(0, X.shape[0], config.batch_size), disable=not config.progress, desc=desc,
                      leave=False):
        idx = perm[start:start + config.batch_size]
        if len(idx) < 2:
            continue
        xb = X[idx] if augment is None else augment(X[idx], generator)
        z = encoder(xb)
        # The quantization loss is taken before the snapping layer, which snaps only the
        # similarity gradient.
        sim = loss_fn(snap_layer(z) if snap_layer is not None else z, y[idx])
        loss = sim
        qerr = math.nan
        if codebook is not None:
            err = ((z - codebook.reconstruct(z.detach())) ** 2).sum(dim=1).mean()
            if quant_weight > 0:
                loss = loss + quant_weight * err
            qerr = float(err.detach())
        if not torch.isfinite(loss):
            raise InputError(f"training diverged (loss {float(loss)} at step {steps + 1}); lower lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        snapped = snap_layer.last_snapped_fraction if (snap_layer is not None and codebook is not None) else 0.0
        sums += (float(loss.detach()), float(sim.detach()), qerr, snapped)
        steps += 1
    return sums / max(steps, 1)


def _copy_weights(module: nn.Module) -> dict:
    return copy.deepcopy(module.state_dict())
