"""Seeded parameter initialisation, so networks are reproducible without touching torch's global RNG."""
from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def reset_parameters(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-draw every Linear/Conv weight and bias of ``module`` from ``generator`` with torch's own
    default scheme (Kaiming-uniform with a = sqrt(5); bias uniform in ±1/sqrt(fan_in)); other
    modules with parameters of their own define ``reset_from(generator)``."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                fan_in = m.weight[0].numel()
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif hasattr(m, "reset_from"):
            m.reset_from(generator)
    return module
