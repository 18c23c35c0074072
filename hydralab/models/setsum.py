"""The set-sum model: one shared base regressor f whose outputs are summed over a set of scans."""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from hydralab.data.sets import check_k_p

ZeroMode = Literal["paper", "anchored", "skip"]
ChunkSize = int | Literal["auto"] | None
# 2**24 voxels: about 10 GiB of activations saved for backward by BaseRegressor in float32
# (about 0.65 KiB a voxel, benchmarks/bench.py), far above the CPU default sizes (8 images of 20^3
# = 64,000 voxels) and a GPU batch of 16 scans of 96^3 (14.2 M), which all keep the fast path.
DEFAULT_CHUNK_THRESHOLD = 2**24


class SetSumRegressor(nn.Module):
    """Hydranet's K-branch model as one network: g(S) = sum over the K slots of a shared f.

    A virtual sample is a set of K scans whose label is the sum of their labels; a slot may be
    empty (an all-zero image, label 0). The K weight-sharing branches of the paper are the same
    function, so one call of ``base`` on every image of the batch computes them all.

    ``zero_mode`` says what an empty slot contributes:

    * ``"paper"``: f(0), as in the paper. A single scan is predicted as f(x) + (K-1) f(0): the set
      model with the K-1 other slots empty.
    * ``"anchored"``: every slot uses h(x) = f(x) - f(0), so an empty slot adds exactly 0 and a
      single scan is predicted as h(x). The label of an empty set is 0, and so is its prediction.
    * ``"skip"``: an empty slot adds exactly 0 and the zero image is never shown to f; a single
      scan is predicted as f(x). Sets still vary in size (p is the knob), but f never has to
      learn an all-zero image, which is unlike any normalised scan: when mean intensity falls as
      the label rises (the min-max shortcut), learning f(0) = 0 pushes f the wrong way.

    Empty slots are never pushed through ``base``: f(0) is computed once per call and reused,
    which is the same maths as K branches with less work, provided ``base`` treats the samples of
    a batch independently (no BatchNorm in train mode). With dropout in train mode, all empty
    slots of a call share one dropout mask, where K real branches would each draw their own.

    ``chunk_size`` bounds memory for large K (the paper stopped at K = 4 for GPU memory): while
    gradients are needed, ``base`` sees at most that many images per call, and each chunk runs
    under ``torch.utils.checkpoint`` (non-reentrant), so its activations are recomputed in
    backward instead of kept and only one chunk's are alive at a time. The recomputation replays
    the chunk's RNG state (dropout draws the same masks) and the forward's autocast state (under
    bf16 mixed precision it recomputes in bf16, as the forward ran). The loss is still computed
    once on the summed prediction, with the same value and gradients as without chunks; the cost
    is one more forward pass. A layer that updates buffers in forward (BatchNorm's running
    statistics) updates them again when its chunk is recomputed. ``None`` (the default) keeps
    the single-call path.
    ``"auto"`` chunks only a call whose images hold more than ``chunk_threshold`` voxels in all,
    in chunks of as many images as fit under it, so small batches keep the faster single call
    and only a batch that would need that much memory pays for the recomputation.

    ``k`` is checked by the set rules' own ``check_k_p`` (``hydralab.data.sets``), so a model
    built outside a ``SetSpec`` (benchmarks, notebooks) cannot take a set size the rules reject.
    """

    def __init__(
        self,
        base: nn.Module,
        k: int,
        zero_mode: ZeroMode = "paper",
        chunk_size: ChunkSize = None,
        chunk_threshold: int = DEFAULT_CHUNK_THRESHOLD,
    ):
        super().__init__()
        check_k_p(k, 0.0)  # the set rules' check of k; p belongs to the sampler, not the model
        if zero_mode not in get_args(ZeroMode):
            raise ValueError(f"zero_mode must be one of {get_args(ZeroMode)}, got {zero_mode!r}")
        if chunk_size not in (None, "auto") and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(
                f"chunk_size must be None, 'auto' or an integer >= 1, got {chunk_size!r}"
            )
        if (
            isinstance(chunk_threshold, bool)
            or not isinstance(chunk_threshold, int)
            or chunk_threshold < 1
        ):
            raise ValueError(f"chunk_threshold must be an integer >= 1, got {chunk_threshold!r}")
        self.base = base
        self.k = k
        self.zero_mode: ZeroMode = zero_mode
        self.chunk_size: ChunkSize = chunk_size
        self.chunk_threshold = chunk_threshold

    def images_per_call(self, n_images: int, voxels_per_image: int) -> int | None:
        """How many images ``base`` may see at once in a call of ``n_images``; None: all of them.

        ``"auto"`` keeps one call up to ``chunk_threshold`` voxels, then takes as many images per
        chunk as fit under it (at least one).
        """
        chunk = self.chunk_size
        if chunk == "auto":
            if n_images * voxels_per_image <= self.chunk_threshold:
                return None
            chunk = max(1, self.chunk_threshold // voxels_per_image)
        if chunk is None or n_images <= chunk:
            return None
        return chunk

    def _run_base(self, images: Tensor) -> Tensor:
        """``base(images)``, chunked with recomputation when ``chunk_size`` asks and grads flow."""
        chunk = self.images_per_call(images.shape[0], math.prod(images.shape[1:]))
        if chunk is None or not torch.is_grad_enabled():
            return self.base(images)
        return torch.cat(
            [
                checkpoint(self.base, part, use_reentrant=False, preserve_rng_state=True)
                for part in images.split(chunk)
            ]
        )

    def _base_with_zero(self, images: Tensor, need_zero: bool) -> tuple[Tensor, Tensor | None]:
        """Run ``base`` once on ``images`` (+ one zero image if needed): return f(images), f(0).

        Appending the zero image to the same call avoids a second call and, on CPU, the slow
        batch-of-one path of 3D convolutions.
        """
        if not need_zero:
            return self._run_base(images), None
        zero = images.new_zeros((1, *images.shape[1:]))
        out = self._run_base(torch.cat([images, zero]))
        return out[:-1], out[-1]

    def forward_sets(self, images: Tensor, zero: Tensor) -> tuple[Tensor, Tensor]:
        """Predict the label of each set.

        Args:
            images: ``(B, K, C, D, H, W)`` scans; the content of empty slots is ignored.
            zero: ``(B, K)`` bool, True where the slot is empty (an all-zero image).

        Returns:
            ``(B,)`` set predictions g(S) and ``(B, K)`` per-slot values (f or h of each slot),
            whose sum over K is g(S).
        """
        if images.ndim != 6:
            raise ValueError(f"images must be (B, K, C, D, H, W), got {tuple(images.shape)}")
        if zero.dtype != torch.bool or zero.shape != images.shape[:2]:
            raise ValueError(
                f"zero must be a bool tensor of shape {tuple(images.shape[:2])}, "
                f"got {zero.dtype} {tuple(zero.shape)}"
            )
        b, k = zero.shape
        if k != self.k:
            raise ValueError(f"images hold {k} slots per set but the model has k={self.k}")
        flat_zero = zero.reshape(-1)
        keep = (~flat_zero).nonzero().squeeze(1)
        real = images.reshape(b * k, *images.shape[2:]).index_select(0, keep)
        anchored = self.zero_mode == "anchored"
        need_zero = anchored or (self.zero_mode == "paper" and bool(flat_zero.any()))
        f_real, f_zero = self._base_with_zero(real, need_zero)

        if self.zero_mode == "skip":
            values = f_real.new_zeros(b * k).index_copy(0, keep, f_real)
        elif anchored:
            # h(0) = 0 exactly: empty slots keep the literal zero, real slots get f(x) - f(0).
            values = f_real.new_zeros(b * k).index_copy(0, keep, f_real - f_zero)
        elif f_zero is None:
            values = f_real  # no empty slot: keep covers every slot, in order
        else:
            values = f_zero.expand(b * k).index_copy(0, keep, f_real)
        values = values.reshape(b, k)
        return values.sum(dim=1), values

    def predict_scans(self, images: Tensor) -> Tensor:
        """Predict the label of single scans ``(N, C, D, H, W)`` -> ``(N,)``.

        The set model with the scan in one slot and the K-1 others empty: f(x) + (K-1) f(0) in
        paper mode (exactly f(x) for K=1), h(x) = f(x) - f(0) in anchored mode, where an
        all-zero scan predicts exactly 0.
        """
        if images.ndim != 5:
            raise ValueError(f"images must be (N, C, D, H, W), got {tuple(images.shape)}")
        anchored = self.zero_mode == "anchored"
        need_zero = anchored or (self.zero_mode == "paper" and self.k > 1)
        f_x, f_zero = self._base_with_zero(images, need_zero=need_zero)
        if f_zero is None:
            return f_x
        if anchored:
            # f(0) at another batch position can differ from f_zero by rounding; an all-zero scan
            # is an empty slot, so it gets the exact 0 it gets in forward_sets.
            empty = ~images.flatten(1).any(dim=1)
            return torch.where(empty, torch.zeros_like(f_x), f_x - f_zero)
        return f_x + (self.k - 1) * f_zero

    @torch.no_grad()
    def zero_value(self, shape: tuple[int, int, int, int]) -> Tensor:
        """f(0) for an all-zero image of ``shape`` ``(C, D, H, W)``, as a detached scalar.

        Meant for logging: in paper mode a single-scan prediction carries (K-1) f(0), so how f(0)
        drifts during training matters. Uses the current train/eval mode of ``base``.
        """
        param = next(self.base.parameters(), None)
        kwargs = {"dtype": param.dtype, "device": param.device} if param is not None else {}
        return self.base(torch.zeros((1, *shape), **kwargs))[0]
