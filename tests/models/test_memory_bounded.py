"""Memory-bounded Hydranet: chunked passes give the standard loss and grads in bounded memory."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hydralab.models.regressor import BaseRegressor
from hydralab.models.setsum import SetSumRegressor

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"
_spec = importlib.util.spec_from_file_location("hydralab_bench", BENCH)
bench = sys.modules.setdefault("hydralab_bench", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(bench)

SHAPE = (1, 6, 6, 6)  # tiny: the tests run on two shared CPU cores


class ChunkedCalls(nn.Module):
    """``base`` called chunk by chunk with a graph: the dropout draws of the chunked path."""

    def __init__(self, base: nn.Module, chunk: int) -> None:
        super().__init__()
        self.base, self.chunk = base, chunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.base(part) for part in x.split(self.chunk)])


def loss_and_grads(
    chunk: int | str | None,
    zero_mode: str,
    dropout: float = 0.0,
    reference_chunk: int | None = None,
    threshold: int = 2**24,
    calls: list[int] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    torch.manual_seed(0)
    base = BaseRegressor(dropout=dropout).double()
    if calls is not None:  # record how many images each call of base sees
        base.register_forward_pre_hook(lambda _, args: calls.append(args[0].shape[0]))
    net = base if reference_chunk is None else ChunkedCalls(base, reference_chunk)
    model = SetSumRegressor(
        net,  # type: ignore[arg-type]
        k=4,
        zero_mode=zero_mode,  # type: ignore[arg-type]
        chunk_size=chunk,  # type: ignore[arg-type]
        chunk_threshold=threshold,
    )
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(3, 4, *SHAPE, generator=gen, dtype=torch.float64)
    zero = torch.rand(3, 4, generator=gen) < 0.3
    zero[0, 0] = True
    target = torch.randn(3, generator=gen, dtype=torch.float64)
    torch.manual_seed(2)  # the same dropout draws for both paths
    prediction, _ = model.forward_sets(images, zero)
    loss = F.mse_loss(prediction, target)
    loss.backward()
    return loss.detach(), [p.grad for p in base.parameters()]


def assert_same(a: tuple[torch.Tensor, list[torch.Tensor]], b: tuple[torch.Tensor, list]) -> None:
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)
    for g_a, g_b in zip(a[1], b[1], strict=True):
        torch.testing.assert_close(g_a, g_b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("zero_mode", ["paper", "anchored", "skip"])
@pytest.mark.parametrize("chunk", [1, 5])
def test_chunked_loss_and_grads_equal_standard(zero_mode: str, chunk: int) -> None:
    assert_same(loss_and_grads(chunk, zero_mode), loss_and_grads(None, zero_mode))


def test_chunked_backward_replays_its_dropout_masks() -> None:
    # Chunks draw dropout masks chunk by chunk (as separate calls would); the recomputation in
    # backward must replay exactly those masks.
    reference = loss_and_grads(None, "paper", dropout=0.3, reference_chunk=2)
    assert_same(loss_and_grads(2, "paper", dropout=0.3), reference)


def test_chunked_input_gradient_matches() -> None:
    torch.manual_seed(0)
    model = SetSumRegressor(BaseRegressor().double(), k=2, chunk_size=1)
    images = torch.randn(2, 2, *SHAPE, dtype=torch.float64, requires_grad=True)
    zero = torch.zeros(2, 2, dtype=torch.bool)
    (grad_c,) = torch.autograd.grad(model.forward_sets(images, zero)[0].sum(), images)
    model.chunk_size = None
    (grad,) = torch.autograd.grad(model.forward_sets(images, zero)[0].sum(), images)
    torch.testing.assert_close(grad_c, grad)


def peak_for(k: int, chunk: int | None) -> int:
    torch.manual_seed(0)
    model = SetSumRegressor(BaseRegressor(), k=k, chunk_size=chunk)
    images = torch.randn(1, k, *SHAPE)
    zero = torch.zeros(1, k, dtype=torch.bool)

    def step() -> None:
        model.forward_sets(images, zero)[0].sum().backward()

    return bench.saved_tensor_peak_bytes(step)


def test_chunked_memory_does_not_grow_with_k() -> None:
    assert peak_for(16, chunk=2) <= 1.3 * peak_for(4, chunk=2)
    # the standard path does grow, so the measurement can see the difference
    assert peak_for(16, chunk=None) > 3 * peak_for(4, chunk=None)


def test_chunk_size_is_validated() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        SetSumRegressor(BaseRegressor(), k=2, chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        SetSumRegressor(BaseRegressor(), k=2, chunk_size="always")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_threshold"):
        SetSumRegressor(BaseRegressor(), k=2, chunk_size="auto", chunk_threshold=0)


VOXELS = 216  # one 6^3 image


@pytest.mark.parametrize(
    ("chunk", "threshold", "n_images", "expected"),
    [
        ("auto", 12 * VOXELS, 12, None),  # at the threshold: one call
        ("auto", 12 * VOXELS - 1, 12, 11),  # just above: as many images as fit under it
        ("auto", 5 * VOXELS + 100, 12, 5),
        ("auto", 100, 12, 1),  # one image is above it: one image per chunk, never zero
        ("auto", 100, 1, None),  # a single image cannot be split
        (None, 1, 12, None),
        (4, 2**30, 12, 4),  # a fixed size ignores the threshold
        (4, 1, 3, None),
    ],
)
def test_auto_chunking_selects_by_voxels_per_call(chunk, threshold, n_images, expected) -> None:
    model = SetSumRegressor(BaseRegressor(), k=4, chunk_size=chunk, chunk_threshold=threshold)
    assert model.images_per_call(n_images, VOXELS) == expected


@pytest.mark.parametrize("zero_mode", ["paper", "anchored", "skip"])
def test_auto_chunking_keeps_the_standard_loss_and_grads(zero_mode: str) -> None:
    standard_calls: list[int] = []
    standard = loss_and_grads(None, zero_mode, calls=standard_calls)
    small_calls: list[int] = []  # far under the threshold: the same single call
    assert_same(loss_and_grads("auto", zero_mode, calls=small_calls), standard)
    assert small_calls == standard_calls and len(small_calls) == 1
    chunked_calls: list[int] = []  # above it: chunks of at most 3 images, same loss and grads
    assert_same(
        loss_and_grads("auto", zero_mode, threshold=3 * VOXELS, calls=chunked_calls), standard
    )
    assert max(chunked_calls) <= 3 and len(chunked_calls) > 2


def test_auto_chunking_bounds_memory_above_the_threshold() -> None:
    def peak(k: int, threshold: int) -> int:
        torch.manual_seed(0)
        model = SetSumRegressor(BaseRegressor(), k=k, chunk_size="auto", chunk_threshold=threshold)
        images = torch.randn(1, k, *SHAPE)
        zero = torch.zeros(1, k, dtype=torch.bool)
        return bench.saved_tensor_peak_bytes(
            lambda: model.forward_sets(images, zero)[0].sum().backward()
        )

    assert peak(16, threshold=2 * VOXELS) <= 1.3 * peak(4, threshold=2 * VOXELS)
    assert peak(16, threshold=2**24) > 3 * peak(4, threshold=2**24)  # under it: standard path


def test_hydra_module_passes_memory_chunk() -> None:
    from hydralab.training.module import HydraModule

    module = HydraModule(method="hydranet", k=4, memory_chunk=2)
    assert module.model.chunk_size == 2
    assert module.hparams.memory_chunk == 2
    default = HydraModule(method="hydranet", k=4, memory_chunk_threshold=1000)
    assert default.model.chunk_size == "auto" and default.model.chunk_threshold == 1000
    # the CPU default sizes (8 images of 20^3) stay on the single-call path
    assert HydraModule(method="hydranet", k=4).model.images_per_call(8 + 1, 20**3) is None
    for bad in ({"memory_chunk": 0}, {"memory_chunk": "yes"}, {"memory_chunk_threshold": 0}):
        with pytest.raises(ValueError, match="model.memory_chunk"):
            HydraModule(method="hydranet", k=4, **bad)
