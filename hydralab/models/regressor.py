"""The base regressor f of Hydranet: a small 3D CNN mapping one scan to one number."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BaseRegressor(nn.Module):
    """Hydranet's base regressor (paper, Figure 2 left): two skip-connected conv blocks, GAP, FC.

    Block 1: Conv(32) → Conv(32), concatenated with its input, then MaxPool(2).
    Block 2: Conv(64) → Conv(64), concatenated with its (pooled) input.
    Global average pooling then one linear unit with no activation, so the output can take any
    sign: the set model sums it over slots and the empty-image value f(0) must be free.

    Every conv is 3x3x3 with "same" padding, so the network is fully convolutional: any spatial
    size with each side >= 2 works (odd sizes included; the max pool floors). With
    ``in_channels=1`` it has exactly 196,418 parameters.

    ``dropout`` is applied after every conv's ReLU and ``pool_dropout`` after global pooling, the
    placement of the paper's dropout ablation; both default to 0 (the paper's main setting).
    """

    def __init__(self, in_channels: int = 1, dropout: float = 0.0, pool_dropout: float = 0.0):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        for name, value in (("dropout", dropout), ("pool_dropout", pool_dropout)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        self.in_channels = in_channels
        block1_out = in_channels + 32  # skip concat: input channels + conv features
        block2_out = block1_out + 64
        self.block1 = nn.Sequential(
            nn.Conv3d(in_channels, 32, 3, padding="same"),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv3d(32, 32, 3, padding="same"),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.pool = nn.MaxPool3d(2)
        self.block2 = nn.Sequential(
            nn.Conv3d(block1_out, 64, 3, padding="same"),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv3d(64, 64, 3, padding="same"),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.pool_dropout = nn.Dropout(pool_dropout)
        self.head = nn.Linear(block2_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Map scans ``(N, C, D, H, W)`` to predictions ``(N,)``."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected images of shape (N, {self.in_channels}, D, H, W), got {tuple(x.shape)}"
            )
        if min(x.shape[2:]) < 2:
            raise ValueError(f"each spatial side must be >= 2 (max pool), got {tuple(x.shape)}")
        x = self.pool(torch.cat([x, self.block1(x)], dim=1))
        x = torch.cat([x, self.block2(x)], dim=1)
        x = self.pool_dropout(x.mean(dim=(2, 3, 4)))
        return self.head(x).squeeze(1)
