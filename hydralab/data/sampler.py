"""The combination sampler: which real scans form each virtual sample, and which slots are empty.

This is the heart of Hydranet's augmentation. Each epoch the training scans are partitioned into
sets of K (a fresh permutation per epoch), and each slot is independently replaced by an all-zero
image with probability p, so set sizes vary between 0 and K. The model's target for a set is the
sum of its members' labels, a zero slot contributing 0. With K = 1 and p = 0 the same sampler
yields plain shuffled single scans: the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from hydralab.data.sets import check_k_p

ZERO_SLOT = -1
"""Index that marks a slot holding the all-zero image (label 0)."""


class CombinationSampler(Sampler[tuple[int, ...]]):
    """Yield one tuple of K scan indices per virtual sample, ``ZERO_SLOT`` for empty slots.

    Without replacement an epoch has ceil(N / K) sets and visits every scan once, the same number
    of images (hence the same compute) as a baseline epoch; when K does not divide N the last
    set is completed with zero slots. With replacement each set draws K distinct scans afresh.

    ``sets_per_batch`` > 1 (full batches) makes an epoch the fewest whole passes that fill every
    batch: with N = 20, K = 4 and 4 sets per batch, one pass of 5 sets would end in a batch of
    one set, a step whose gradient rests on one sum; four passes make 20 sets, 5 full batches.
    Every scan is still visited equally often. With one pass per epoch the draw is unchanged.
    Reproducible: the draw depends only on ``seed`` and the epoch (``set_epoch``, which Lightning
    calls, or an internal counter advanced by each pass).
    """

    def __init__(
        self,
        n_scans: int,
        k: int,
        p: float = 0.0,
        *,
        replacement: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        sets_per_batch: int = 1,
    ) -> None:
        if n_scans < 1:
            raise ValueError(
                f"the combination sampler needs at least one scan, got n_scans={n_scans}"
            )
        check_k_p(k, p)
        if sets_per_batch < 1:
            raise ValueError(f"sets_per_batch must be >= 1, got {sets_per_batch}")
        self.n_scans = n_scans
        self.k = k
        self.p = p
        self.replacement = replacement
        self.shuffle = shuffle
        self.seed = seed
        self.sets_per_pass = math.ceil(n_scans / k)
        self.passes = sets_per_batch // math.gcd(self.sets_per_pass, sets_per_batch)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.passes * self.sets_per_pass

    def sets_for_epoch(self, epoch: int) -> np.ndarray:
        """The (n_sets, K) index array of one epoch; ``ZERO_SLOT`` marks empty slots."""
        rng = np.random.default_rng([self.seed, epoch])
        n_sets = len(self)
        if self.replacement:
            sets = np.stack([self._draw_set(rng) for _ in range(n_sets)])
        else:
            sets = np.concatenate([self._partition(rng) for _ in range(self.passes)])
        if self.p > 0:
            sets = np.where(rng.random(sets.shape) < self.p, ZERO_SLOT, sets)
        return sets

    def _partition(self, rng: np.random.Generator) -> np.ndarray:
        """One pass: every scan once, in sets of K, the last one padded with zero slots."""
        order = rng.permutation(self.n_scans) if self.shuffle else np.arange(self.n_scans)
        padded = np.full(self.sets_per_pass * self.k, ZERO_SLOT, dtype=np.int64)
        padded[: self.n_scans] = order
        return padded.reshape(self.sets_per_pass, self.k)

    def _draw_set(self, rng: np.random.Generator) -> np.ndarray:
        # Distinct members within a set when there are enough scans to allow it.
        return rng.choice(self.n_scans, size=self.k, replace=self.n_scans < self.k)

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        sets = self.sets_for_epoch(self.epoch)
        self.epoch += 1
        for row in sets:
            yield tuple(int(i) for i in row)
