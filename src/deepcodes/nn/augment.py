"""Data augmentation of image rows for training: random translations and horizontal flips."""
from __future__ import annotations

import torch


class CropFlip:
    """Random translation by up to ``pad`` pixels (zero fill, the usual pad-and-crop of CIFAR-10
    training) and a horizontal flip with probability ½, drawn per image from the loop's generator.

    Rows are images flattened in HWC order (``image_shape`` = (H, W, C)); the output has the input's
    shape, dtype and device.
    """

    def __init__(self, image_shape: tuple[int, int, int], pad: int = 4, flip: bool = True):
        self.image_shape = tuple(int(s) for s in image_shape)
        self.pad = int(pad)
        self.flip = bool(flip)

    def __call__(self, X: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        H, W, C = self.image_shape
        B, p = X.shape[0], self.pad
        images = torch.nn.functional.pad(X.reshape(B, H, W, C), (0, 0, p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (B,), generator=generator).to(X.device)
        dx = torch.randint(0, 2 * p + 1, (B,), generator=generator).to(X.device)
        rows = dy[:, None] + torch.arange(H, device=X.device)[None]
        cols = torch.arange(W, device=X.device)[None].expand(B, W)
        if self.flip:
            flipped = (torch.rand(B, generator=generator) < 0.5).to(X.device)
            cols = torch.where(flipped[:, None], W - 1 - cols, cols)
        cols = dx[:, None] + cols
        batch = torch.arange(B, device=X.device)[:, None, None]
        return images[batch, rows[:, :, None], cols[:, None, :]].reshape(B, -1)
