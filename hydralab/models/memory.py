"""Peak memory of a step on any device, CUDA's allocator statistics not needed.

``memory_chunk`` trades time for memory; to choose it (and to show that the chunked path's memory
follows the chunk, not K) one needs the peak bytes a training step holds. On CUDA the allocator
reports it; on a CPU nothing does, so :class:`LiveBytes` counts it from the operators themselves.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages that ops create while the mode is on, alive together.

    Every op output's storage counts from its creation until it is freed (a weakref on the
    storage fires then), so activations kept for backward, the chunked path's recomputation and
    the gradients all count, each storage once. Deterministic: it counts allocations, not time.
    Tensors made before the mode (parameters, inputs) are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if not isinstance(tensor, Tensor):
                continue
            storage = tensor.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or key in self._seen:
                continue  # a view, or an in-place result, of a storage already counted
            self._seen.add(key)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key, nbytes)
        return out


def peak_bytes(step: Callable[[], object]) -> int:
    with LiveBytes() as mode:
        step()
    return mode.peak
