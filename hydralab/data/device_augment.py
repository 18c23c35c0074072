"""The training augmentation of ``transforms.augmentation`` for a whole batch, on its device.

TorchIO augments one scan at a time on the CPU (SimpleITK resampling), which keeps up with a
CPU train step but leaves a GPU idle. ``BatchAugmentation`` draws the same random flips,
rotations and translations, from the same distributions, for every scan of a batch at once and
resamples them all with one ``affine_grid``/``grid_sample`` call on the batch's device.

What it mirrors, from TorchIO's ``RandomFlip`` then ``RandomAffine``:

* flips: each axis of ``flip_axes`` independently with probability 0.5;
* rotation: angles about the three world (RAS) axes, each uniform in ±``rotation`` radians,
  composed as ITK's ``Euler3DTransform`` does (R = Rz Rx Ry), about the image centre;
* translation: along each world axis, uniform in ±``translation`` voxels (that many voxel
  sizes in mm, as ``augmentation`` converts it);
* trilinear resampling; points that fall outside the scan (beyond half a voxel, as ITK decides)
  take the scan's minimum, TorchIO's ``default_pad_value="minimum"``; edge voxels are replicated
  within that half voxel, as ITK's linear interpolator does.

The rotation and translation are defined in world coordinates through the scans' voxel-to-world
``affine``, so anisotropic voxels rotate as physical space does (one affine for the batch: the
data module uses the first training scan's, as the CPU path uses its spacing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the augmentation for ``N`` scans (the sample/apply split of TorchIO).

    ``flips`` (N, 3) bool per voxel axis; ``radians`` (N, 3) about the world x, y, z axes;
    ``translation`` (N, 3) along the world axes, in voxels (times the spacing: mm).
    """

    flips: Tensor
    radians: Tensor
    translation: Tensor


def _rotation(radians: Tensor) -> Tensor:
    """(N, 3) angles -> (N, 3, 3) rotations R = Rz Rx Ry, ITK's Euler3DTransform order."""
    cos, sin = radians.cos(), radians.sin()
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])

    def matrix(rows: list[list[Tensor]]) -> Tensor:
        return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)

    cx, cy, cz, sx, sy, sz = cos[:, 0], cos[:, 1], cos[:, 2], sin[:, 0], sin[:, 1], sin[:, 2]
    rx = matrix([[one, zero, zero], [zero, cx, -sx], [zero, sx, cx]])
    ry = matrix([[cy, zero, sy], [zero, one, zero], [-sy, zero, cy]])
    rz = matrix([[cz, -sz, zero], [sz, cz, zero], [zero, zero, one]])
    return rz @ rx @ ry


class BatchAugmentation:
    """Random flips, rotations and translations of a batch of scans, on the batch's device.

    Args:
        flip_axes: voxel axes (0, 1, 2) that may be flipped, each with probability 0.5.
        rotation: the largest rotation about each axis, in radians.
        translation: the largest translation along each axis, in voxels.
        affine: the scans' 4 x 4 voxel-to-world matrix (its 3 x 3 part is used); default identity.
    """

    def __init__(
        self,
        flip_axes: Sequence[int] = (0, 1, 2),
        rotation: float = 0.2,
        translation: float = 2.0,
        affine: Tensor | None = None,
    ) -> None:
        axes = tuple(int(a) for a in flip_axes)
        if any(a not in (0, 1, 2) for a in axes):
            raise ValueError(f"flip_axes must be among 0, 1, 2, got {tuple(flip_axes)!r}")
        if not rotation >= 0 or not translation >= 0:
            raise ValueError(
                f"rotation and translation must be >= 0, got {rotation} and {translation}"
            )
        linear = torch.eye(3, dtype=torch.float64)
        if affine is not None:
            linear = torch.as_tensor(affine, dtype=torch.float64)[:3, :3]
        if not torch.linalg.matrix_rank(linear) == 3:
            raise ValueError(f"the scans' affine is singular:\n{linear}")
        self.flip_axes = axes
        self.rotation = float(rotation)
        self.translation = float(translation)
        self.linear = linear  # voxel -> world: directions times spacing
        self.spacing = linear.norm(dim=0)  # as TorchIO computes Image.spacing
        self._constants: dict[tuple, tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    @property
    def resamples(self) -> bool:
        """Whether a rotation or translation is drawn (TorchIO then always resamples)."""
        return self.rotation > 0 or self.translation > 0

    def sample(
        self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> AugmentParams:
        """Draw the parameters of ``n`` scans on ``device`` (``generator`` must live there)."""
        uniform = torch.rand(2, n, 3, device=device, generator=generator) * 2 - 1
        # TorchIO: flip where 0.5 > U(0, 1), axis by axis, then only along the allowed axes.
        flips = torch.rand(n, 3, device=device, generator=generator) < 0.5
        for axis in {0, 1, 2} - set(self.flip_axes):
            flips[:, axis] = False
        return AugmentParams(flips, uniform[0] * self.rotation, uniform[1] * self.translation)

    def _geometry(self, shape: Sequence[int], device: torch.device) -> tuple[Tensor, ...]:
        """Constant 3 x 3 factors of ``theta`` for one shape, made once per device (no copies
        or solves per batch, which would wait for the GPU)."""
        key = (tuple(shape), device)
        if key not in self._constants:
            half = (torch.tensor([float(n) for n in shape], dtype=torch.float64) - 1) / 2
            half = half.clamp(min=0.5)
            m_inv = torch.linalg.inv(self.linear)
            left = m_inv / half[:, None]  # H^-1 M^-1
            right = self.linear * half[None, :]  # M H
            shift = torch.diag(self.spacing)  # voxels -> mm along the world axes
            self._constants[key] = tuple(
                t.to(device=device, dtype=torch.float32) for t in (left, right, shift, half.flip(0))
            )
        return self._constants[key]

    def theta(self, params: AugmentParams, shape: Sequence[int]) -> Tensor:
        """The (N, 3, 4) ``affine_grid`` matrices of ``params`` for scans of spatial ``shape``.

        TorchIO resamples output point p from the input at T^-1(p), T(x) = R (x - c) + c + t in
        world space, c the image centre, after flipping. In voxel coordinates centred on c that
        is u_in = D M^-1 R^T (M u_out - t), D the flips, M the affine's 3 x 3 part; grid
        coordinates (align_corners) are u / ((n - 1) / 2), in reversed axis order (x is W).
        """
        left, right, shift, _ = self._geometry(shape, params.radians.device)
        rot_t = _rotation(params.radians.float()).transpose(1, 2)
        signs = (1 - 2 * params.flips.float()).unsqueeze(-1)  # -1 where flipped
        linear = signs * (left @ rot_t @ right)
        t_mm = shift @ params.translation.float().unsqueeze(-1)
        offset = -signs * (left @ rot_t @ t_mm)
        reverse = [2, 1, 0]
        return torch.cat([linear[:, reverse][:, :, reverse], offset[:, reverse]], dim=2)

    def apply(self, images: Tensor, params: AugmentParams) -> Tensor:
        """Flip, rotate and translate ``images`` (N, C, D, H, W) by ``params``; a new tensor."""
        if images.ndim != 5:
            raise ValueError(f"images must be (N, C, D, H, W), got {tuple(images.shape)}")
        if not self.resamples:
            out = images
            for axis in range(3):
                flip = params.flips[:, axis].view(-1, 1, 1, 1, 1)
                out = torch.where(flip, out.flip(axis + 2), out)
            return out if out is not images else images.clone()
        shape = images.shape[2:]
        theta = self.theta(params, shape)
        grid = F.affine_grid(theta, list(images.shape), align_corners=True)
        # ITK samples continuous indices in [-0.5, n - 0.5), replicating the edge voxels within
        # that half voxel ('border'), and pads beyond with the minimum.
        half = self._geometry(shape, grid.device)[3]
        index = grid * half  # voxels from the centre, as (W, H, D)
        inside = ((index >= -half - 0.5) & (index < half + 0.5)).all(dim=-1).unsqueeze(1)
        # float32 at least: a half-precision grid would misplace samples by a good part of a voxel
        source = images.float() if images.dtype in (torch.float16, torch.bfloat16) else images
        out = F.grid_sample(
            source,
            grid.to(source.dtype),
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        )
        minimum = source.amin(dim=(2, 3, 4), keepdim=True)
        return torch.where(inside, out, minimum).to(images.dtype)

    def __call__(
        self, images: Tensor, zero: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Augment a batch ``(B, K, C, D, H, W)`` (or ``(N, C, D, H, W)``); zero slots stay zero.

        ``zero`` (B, K) marks the empty slots: they are left out, so they stay exactly all-zero
        and cost nothing, as on the CPU path, which augments real scans only.
        """
        lead = images.shape[:-4]
        flat = images.reshape(-1, *images.shape[-4:])
        if zero is None:
            keep = torch.arange(flat.shape[0], device=flat.device)
        else:
            keep = (~zero.reshape(-1).to(flat.device)).nonzero().squeeze(1)
        if keep.numel() == 0:
            return images
        real = flat.index_select(0, keep)
        params = self.sample(real.shape[0], device=flat.device, generator=generator)
        out = flat.index_copy(0, keep, self.apply(real, params).to(flat.dtype))
        return out.reshape(*lead, *images.shape[-4:])
