"""The Gradient Snapping Layer (Liu & Lu, 2016; ALGORITHMS.md section 5).

Forward is the identity. Backward receives ``g = dL/dz`` and, per sample (and per subspace for
product quantizers), picks a codeword ``q*`` near ``z`` that lies in a descent direction of the
loss, then returns ``g' = (1 - alpha) g + alpha ||g|| (z - q*) / ||z - q*||``. A step ``z - lr g'``
therefore moves toward ``q*`` while still decreasing the similarity loss to first order, because
both terms have a positive inner product with ``g``. Where no candidate is a descent direction the
gradient passes unchanged.

Two readings of "a neighbouring codeword" (the ``snap`` parameter):

* ``"direction"``: among the ``n_neighbors`` reconstructions nearest to ``z``, the one maximising
  ``<-g, q - z> / ||q - z||``;
* ``"landing"``: the reconstruction nearest to where a similarity step would land,
  ``t = z - r g / ||g||`` with ``r = ||z - q(z)||``, so the pull does not fight the similarity step.

Everything is batched tensor algebra; the only Python loop is over residual stages.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError, NotFittedError

SNAP_MODES = ("direction", "landing")
_TINY = 1e-12


class Codebook:
    """A fitted quantizer's codewords as torch tensors, in the space where it quantizes.

    ``kind="product"`` (PQ, OPQ): ``codebooks`` (M, K, d_pad/M); vectors are zero-padded to
    ``d_pad``, multiplied by ``rotation`` (d_pad, d_pad) when given, and cut into M subspaces that
    snap independently. ``kind="residual"`` (RQ): ``codebooks`` (M, K, d); a reconstruction is the
    sum of one codeword per stage, chosen greedily, and the whole vector is one space.
    """

    def __init__(self, codebooks: torch.Tensor, *, kind: str, dim: int, rotation: torch.Tensor | None = None):
        if kind not in ("product", "residual"):
            raise InputError(f"kind must be 'product' or 'residual', got {kind!r}")
        if codebooks.ndim != 3:
            raise InputError(f"codebooks must be (M, K, d_sub), got shape {tuple(codebooks.shape)}")
        self.codebooks = codebooks
        self.kind = kind
        self.dim = int(dim)
        self.rotation = rotation
        self.sq_norms = (codebooks * codebooks).sum(-1)             # (M, K)
        M, _, ds = codebooks.shape
        self.d_space = M * ds if kind == "product" else ds
        if self.d_space < self.dim:
            raise InputError(f"codebooks cover {self.d_space} dimensions, fewer than the representation's {self.dim}")

    @classmethod
    def from_quantizer(cls, quantizer, device="cpu") -> "Codebook":
        """The codebook of a fitted PQ, OPQ or RQ from :mod:`deepcodes.coders`, on ``device``."""
        from ..coders import PQ, RQ

        if not isinstance(quantizer, (PQ, RQ)):
            raise InputError(f"gradient snapping supports PQ, OPQ and RQ, got {type(quantizer).__name__}")
        if getattr(quantizer, "codebooks_", None) is None:
            raise NotFittedError(f"{type(quantizer).__name__} is not fitted yet: call fit() first")
        books = torch.as_tensor(quantizer.codebooks_, dtype=torch.float32, device=device)
        dim = quantizer.dim_
        if isinstance(quantizer, PQ):
            rot = getattr(quantizer, "rotation_", None)
            rot = None if rot is None else torch.as_tensor(rot, dtype=torch.float32, device=device)
            return cls(books, kind="product", dim=dim, rotation=rot)
        return cls(books, kind="residual", dim=dim)

    def to_space(self, v: torch.Tensor) -> torch.Tensor:
        """(B, dim) representations or gradients -> (B, S, d_s) in the quantizer's space (S subspaces)."""
        if self.kind == "residual":
            return v.unsqueeze(1)
        if self.d_space > self.dim:
            v = nn.functional.pad(v, (0, self.d_space - self.dim))
        if self.rotation is not None:
            v = v @ self.rotation
        return v.reshape(v.shape[0], self.codebooks.shape[0], -1)

    def from_space(self, w: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_space` (B, S, d_s) -> (B, dim); padding coordinates are dropped."""
        w = w.reshape(w.shape[0], -1)
        if self.kind == "product" and self.rotation is not None:
            w = w @ self.rotation.T
        return w[:, :self.dim]

    def _sq_dists(self, y: torch.Tensor) -> torch.Tensor:
        """Squared distances (B, S, K) from points in the quantizer's space to every sub-codeword."""
        cross = torch.einsum("bsd,skd->bsk", y, self.codebooks)
        return ((y * y).sum(-1, keepdim=True) - 2 * cross + self.sq_norms[None]).clamp_min_(0)

    def _pick(self, idx: torch.Tensor) -> torch.Tensor:
        """Sub-codewords (B, S, d_s) of product indices (B, S)."""
        return self.codebooks[torch.arange(self.codebooks.shape[0], device=idx.device)[None], idx]

    def _greedy(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual quantization of y (B, 1, d): every stage's codeword (B, M, d) and index (B, M)."""
        residual = y[:, 0]
        chosen, codes = [], []
        for book in self.codebooks:
            code = torch.cdist(residual, book).argmin(dim=1)
            residual = residual - book[code]
            chosen.append(book[code])
            codes.append(code)
        return torch.stack(chosen, dim=1), torch.stack(codes, dim=1)

    def quantize_space(self, y: torch.Tensor) -> torch.Tensor:
        """Reconstructions (B, S, d_s) of points already in the quantizer's space."""
        if self.kind == "residual":
            return self._greedy(y)[0].sum(dim=1, keepdim=True)
        return self._pick(self._sq_dists(y).argmin(dim=-1))

    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        """q(z): reconstructions (B, dim) of representations (B, dim)."""
        return self.from_space(self.quantize_space(self.to_space(z)))

    def neighbours(self, y: torch.Tensor, n: int) -> torch.Tensor:
        """The ``n`` reconstructions nearest to each point (B, S, n, d_s), per subspace for products.

        For residual codebooks the candidates are the reconstructions that differ from the greedy
        code in one stage (the ``n`` best replacements of each stage), of which the ``n`` nearest
        to the point are kept.
        """
        M, K, _ = self.codebooks.shape
        n = min(n, K)
        if self.kind == "product":
            idx = self._sq_dists(y).topk(n, dim=-1, largest=False).indices
            return self.codebooks[torch.arange(M, device=y.device)[None, :, None], idx]
        chosen, codes = self._greedy(y)                             # (B, M, d), (B, M)
        base = chosen.sum(dim=1, keepdim=True) - chosen             # reconstruction without stage m
        target = y - base                                           # what stage m should approximate
        d2 = torch.einsum("bmd,bmd->bm", target, target)[..., None] \
            - 2 * torch.einsum("bmd,mkd->bmk", target, self.codebooks) \
            + self.sq_norms[None]
        # q(z) itself is every stage's best: keep it once (stage 0) so it does not fill the list.
        d2[:, 1:].scatter_(-1, codes[:, 1:, None], float("inf"))
        idx = d2.topk(n, dim=-1, largest=False).indices              # (B, M, n)
        cands = base[:, :, None] + self.codebooks[torch.arange(M, device=y.device)[None, :, None], idx]
        cands = cands.reshape(y.shape[0], M * n, -1)
        keep = ((cands - y) ** 2).sum(-1).topk(n, dim=-1, largest=False).indices
        return cands.gather(1, keep[..., None].expand(-1, -1, cands.shape[-1]))[:, None]


def snap_toward(y: torch.Tensor, g: torch.Tensor, candidates: torch.Tensor, alpha: float):
    """The snapping formula in the quantizer's space.

    ``y``, ``g`` (B, S, d_s); ``candidates`` (B, S, n, d_s). Returns ``(g', snapped)`` where
    ``snapped`` (B, S) is True where a candidate lay in a descent direction.
    """
    diff = candidates - y.unsqueeze(2)                               # q_k - z
    dist = diff.norm(dim=-1)
    score = -(diff * g.unsqueeze(2)).sum(-1) / dist.clamp_min(_TINY)
    best_score, best = score.max(dim=-1)
    pick = best[..., None, None].expand(-1, -1, 1, diff.shape[-1])
    away = -diff.gather(2, pick)[:, :, 0] / dist.gather(2, best[..., None]).clamp_min(_TINY)   # (z - q*)/||z - q*||
    snapped_g = (1 - alpha) * g + alpha * g.norm(dim=-1, keepdim=True) * away
    ok = best_score > 0
    return torch.where(ok[..., None], snapped_g, g), ok


def snap_gradient(z: torch.Tensor, g: torch.Tensor, codebook: Codebook, *, alpha: float = 0.5,
                  n_neighbors: int = 16, snap: str = "direction"):
    """Snapped gradients (B, dim) for representations ``z`` and gradients ``g`` (B, dim).

    Returns ``(g', fraction of (sample, subspace) pairs that snapped)``.
    """
    y, gy = codebook.to_space(z), codebook.to_space(g)
    if codebook.kind == "product":
        gy2, ok = _snap_product(codebook, y, gy, alpha=alpha, n_neighbors=n_neighbors, snap=snap)
        return codebook.from_space(gy2), ok.float().mean()
    if snap == "direction":
        cands = codebook.neighbours(y, n_neighbors)
    elif snap == "landing":
        r = (y - codebook.quantize_space(y)).norm(dim=-1, keepdim=True)
        t = y - r * gy / gy.norm(dim=-1, keepdim=True).clamp_min(_TINY)
        cands = codebook.quantize_space(t).unsqueeze(2)
    else:
        raise InputError(f"snap must be one of {SNAP_MODES}, got {snap!r}")
    gy2, ok = snap_toward(y, gy, cands, alpha)
    return codebook.from_space(gy2), ok.float().mean()


def _snap_product(codebook: Codebook, y, g, *, alpha, n_neighbors, snap):
    """Product codebooks: choose q* per subspace from distance and inner-product tables (B, S, K)
    instead of materialising every candidate vector, then snap toward q* alone."""
    B = y.shape[0]
    # One batched product gives <y, c> and <g, c> for every codeword c.
    cross = torch.einsum("bsd,skd->bsk", torch.cat([y, g]), codebook.codebooks)
    d2 = ((y * y).sum(-1, keepdim=True) - 2 * cross[:B] + codebook.sq_norms[None]).clamp_min_(0)
    if snap == "direction":
        along = (g * y).sum(-1, keepdim=True) - cross[B:]          # <-g, c - z> = <g, z> - <g, c>
        if n_neighbors < d2.shape[-1]:
            near = d2.topk(n_neighbors, dim=-1, largest=False).indices
            score = along.gather(-1, near) / d2.gather(-1, near).sqrt().clamp_min(_TINY)
            best = near.gather(-1, score.argmax(dim=-1, keepdim=True))[..., 0]
        else:
            best = (along / d2.sqrt().clamp_min(_TINY)).argmax(dim=-1)
    elif snap == "landing":
        r = d2.min(dim=-1, keepdim=True).values.sqrt()
        t = y - r * g / g.norm(dim=-1, keepdim=True).clamp_min(_TINY)
        best = codebook._sq_dists(t).argmin(dim=-1)
    else:
        raise InputError(f"snap must be one of {SNAP_MODES}, got {snap!r}")
    # The descent test is redone on the exact difference q* - z (the tables lose precision for
    # points on a codeword).
    diff = codebook._pick(best) - y
    dist = diff.norm(dim=-1, keepdim=True)
    ok = (-(g * diff).sum(-1) > 0) & (dist[..., 0] > 0)
    snapped = (1 - alpha) * g - alpha * g.norm(dim=-1, keepdim=True) * diff / dist.clamp_min(_TINY)
    return torch.where(ok[..., None], snapped, g), ok


class _SnapFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, layer):
        ctx.layer = layer
        ctx.save_for_backward(z)
        return z.view_as(z)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        layer = ctx.layer
        g2, frac = snap_gradient(z.detach(), g, layer.codebook, alpha=layer.alpha,
                                 n_neighbors=layer.n_neighbors, snap=layer.snap)
        layer.last_snapped_fraction = float(frac)
        return g2, None


class GradientSnapping(nn.Module):
    """Identity in the forward pass; snaps gradients toward neighbouring codewords in the backward.

    Parameters
    ----------
    alpha : mixing weight in [0, 1]: 0 leaves gradients unchanged, 1 replaces them by the pull.
    n_neighbors : candidates per sample (per subspace for PQ/OPQ) for ``snap="direction"``.
    snap : ``"direction"`` or ``"landing"`` (see the module docstring).

    ``codebook`` (a :class:`Codebook`, set with :meth:`set_quantizer`) is the current quantizer;
    while it is None the layer passes gradients through unchanged.
    """

    def __init__(self, alpha: float = 0.5, n_neighbors: int = 16, snap: str = "direction"):
        super().__init__()
        check_snap_params(alpha, n_neighbors, snap)
        self.alpha = float(alpha)
        self.n_neighbors = int(n_neighbors)
        self.snap = snap
        self.codebook: Codebook | None = None
        self.last_snapped_fraction = 0.0

    def set_quantizer(self, quantizer, device="cpu") -> "GradientSnapping":
        """Snap toward the codewords of a fitted PQ/OPQ/RQ (None: stop snapping)."""
        self.codebook = None if quantizer is None else Codebook.from_quantizer(quantizer, device)
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.codebook is None or not torch.is_grad_enabled() or not z.requires_grad:
            return z
        if z.ndim != 2 or z.shape[1] != self.codebook.dim:
            raise InputError(f"GradientSnapping expects (batch, {self.codebook.dim}) inputs, got {tuple(z.shape)}")
        return _SnapFunction.apply(z, self)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, n_neighbors={self.n_neighbors}, snap={self.snap!r}"


def check_snap_params(alpha, n_neighbors, snap) -> None:
    """Raise InputError unless alpha is in [0, 1], n_neighbors >= 1 and snap is a known mode."""
    import numbers

    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= alpha <= 1:
        raise InputError(f"alpha must be a number in [0, 1], got {alpha!r}")
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, numbers.Integral) or n_neighbors < 1:
        raise InputError(f"n_neighbors must be an integer >= 1, got {n_neighbors!r}")
    if snap not in SNAP_MODES:
        raise InputError(f"snap must be one of {SNAP_MODES}, got {snap!r}")
