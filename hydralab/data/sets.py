"""The set rules, in one place: what a method is, and which set sizes and zero-slot rates it takes.

A Hydranet virtual sample is a set of ``k`` scans, each slot empty with probability ``p``; the
baseline is the same machinery with ``k = 1`` and ``p = 0`` (single shuffled scans). Every layer
that needs these rules (the sampler, the data module, the training module, the sweep file, the
report) asks :class:`SetSpec` rather than restating them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Method = Literal["baseline", "hydranet"]
METHODS: tuple[str, ...] = get_args(Method)
HYDRANET_ONLY = ("model.k", "model.p")
"""Config keys a baseline never takes (it trains with k = 1, p = 0): in a sweep they are not
sampled for it, and in a report its runs serve every value of them."""


def check_k_p(k: int, p: float) -> None:
    """Reject a set size or zero-slot probability the method cannot use, naming the argument."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k (images per virtual sample) must be an integer >= 1, got {k!r}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 <= p < 1.0):
        raise ValueError(f"p (probability of a zero slot) must be in [0, 1), got {p!r}")


@dataclass(frozen=True)
class SetSpec:
    """How one run forms its training samples: the method, the set size and the zero-slot rate.

    Raises ``ValueError`` naming the offending value: an unknown method, a ``k`` or ``p`` out of
    range, or a baseline given anything but ``k = 1`` and ``p = 0``.
    """

    method: Method = "baseline"
    k: int = 1
    p: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        check_k_p(self.k, self.p)
        if self.is_baseline and (self.k != 1 or self.p != 0):
            raise ValueError(f"method baseline uses k=1 and p=0, got k={self.k}, p={self.p}")

    @property
    def is_baseline(self) -> bool:
        return self.method == "baseline"

    @staticmethod
    def fixed_for(method: str | None) -> dict[str, float]:
        """The ``model.*`` keys the method fixes (``{model.k: 1, model.p: 0.0}`` for the
        baseline, nothing for Hydranet): what a sweep sets instead of sampling them."""
        if method == "baseline":
            return {HYDRANET_ONLY[0]: 1, HYDRANET_ONLY[1]: 0.0}
        return {}
