"""SetSumRegressor's chunked path: the standard loss and gradients in memory bounded by the chunk.

The chunked path runs each chunk of images under ``torch.utils.checkpoint``, so its activations
are recomputed in backward. These tests pin what that must keep: the same loss and gradients
(tight in float64, within bf16 rounding under CPU autocast, where the recomputation must run in
the forward's precision), the same dropout masks in the recomputation (CPU and, when present,
CUDA), and a peak memory that follows the chunk, not the number of images.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from hydralab.models.memory import peak_bytes
from hydralab.models.regressor import BaseRegressor
from hydralab.models.setsum import SetSumRegressor

SHAPE = (1, 6, 6, 6)  # tiny: the tests run on two shared CPU cores
VOXELS = 216  # one 6^3 image
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(), reason="needs CUDA: its dropout RNG is the GPU's own"
        ),
    ),
]


class ChunkedCalls(nn.Module):
    """``base`` called chunk by chunk with a graph: the dropout draws of the chunked path."""

    def __init__(self, base: nn.Module, chunk: int) -> None:
        super().__init__()
        self.base, self.chunk = base, chunk

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.base(part) for part in x.split(self.chunk)])


def loss_and_grads(
    chunk: int | str | None,
    zero_mode: str,
    dropout: float = 0.0,
    reference_chunk: int | None = None,
    threshold: int = 2**24,
    calls: list[int] | None = None,
    device: str = "cpu",
) -> tuple[Tensor, list[Tensor]]:
    torch.manual_seed(0)
    base = BaseRegressor(dropout=dropout).double().to(device)
    if calls is not None:  # record how many images each call of base sees
        base.register_forward_pre_hook(lambda _, args: calls.append(args[0].shape[0]))
    net = base if reference_chunk is None else ChunkedCalls(base, reference_chunk)
    model = SetSumRegressor(
        net,
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
    torch.manual_seed(2)  # the same dropout draws for both paths (seeds CUDA too)
    prediction, _ = model.forward_sets(images.to(device), zero.to(device))
    loss = F.mse_loss(prediction, target.to(device))
    loss.backward()
    return loss.detach().cpu(), [p.grad.cpu() for p in base.parameters()]


def assert_same(a: tuple[Tensor, list[Tensor]], b: tuple[Tensor, list[Tensor]]) -> None:
    """Equal up to float64 rounding: the chunked sums reorder additions, nothing more."""
    torch.testing.assert_close(a[0], b[0], rtol=1e-10, atol=1e-12)
    for g_a, g_b in zip(a[1], b[1], strict=True):
        torch.testing.assert_close(g_a, g_b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("zero_mode", ["paper", "anchored", "skip"])
@pytest.mark.parametrize("chunk", [1, 5])
def test_chunked_loss_and_grads_equal_standard(zero_mode: str, chunk: int) -> None:
    assert_same(loss_and_grads(chunk, zero_mode), loss_and_grads(None, zero_mode))


@pytest.mark.parametrize("device", DEVICES)
def test_chunked_backward_replays_its_dropout_masks(device: str) -> None:
    # Chunks draw dropout masks chunk by chunk (as separate calls would); the recomputation in
    # backward must replay exactly those masks, from the CPU or the CUDA generator.
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
        reference = loss_and_grads(None, "paper", dropout=0.3, reference_chunk=2, device=device)
        chunked = loss_and_grads(2, "paper", dropout=0.3, device=device)
        no_dropout = loss_and_grads(None, "paper", reference_chunk=2, device=device)
    assert_same(chunked, reference)
    # the masks matter: without them the gradients are others
    assert not torch.allclose(reference[1][0], no_dropout[1][0], rtol=1e-3)


def test_chunked_input_gradient_matches() -> None:
    torch.manual_seed(0)
    model = SetSumRegressor(BaseRegressor().double(), k=2, chunk_size=1)
    images = torch.randn(2, 2, *SHAPE, dtype=torch.float64, requires_grad=True)
    zero = torch.zeros(2, 2, dtype=torch.bool)
    (grad_c,) = torch.autograd.grad(model.forward_sets(images, zero)[0].sum(), images)
    model.chunk_size = None
    (grad,) = torch.autograd.grad(model.forward_sets(images, zero)[0].sum(), images)
    torch.testing.assert_close(grad_c, grad, rtol=1e-10, atol=1e-12)


# -- mixed precision ------------------------------------------------------------------------


def precision_sensitive_base(dtype: torch.dtype) -> BaseRegressor:
    """A base whose first ReLU masks depend on the precision it runs in.

    Its first conv's bias cancels the response to an all-ones image, so on images of 1 + 1e-3
    noise its pre-activations are the noise's (float32) or bf16 rounding's (bf16): a backward
    that recomputes in another precision than the forward takes other masks and gets gradients
    off by far more than bf16 rounding, where plain BaseRegressor would hide it in the noise.
    """
    torch.manual_seed(0)
    base = BaseRegressor().to(dtype)
    conv = base.block1[0]
    with torch.no_grad():
        conv.bias.copy_(-conv.weight.sum(dim=(1, 2, 3, 4)))
    return base


@functools.cache  # each reference is shared by the parametrized cases
def autocast_grads(chunk: int | None, dtype: torch.dtype, autocast: bool) -> Tensor:
    """All parameter gradients of one step, the forward under CPU bf16 autocast if asked."""
    base = precision_sensitive_base(dtype)
    model = SetSumRegressor(base, k=4, chunk_size=chunk)
    gen = torch.Generator().manual_seed(1)
    images = 1 + 1e-3 * torch.randn(3, 4, *SHAPE, generator=gen, dtype=dtype)
    zero = torch.rand(3, 4, generator=gen) < 0.3
    zero[0, 0] = True
    target = torch.randn(3, generator=gen, dtype=dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        prediction, _ = model.forward_sets(images, zero)
    F.mse_loss(prediction.to(dtype), target).backward()  # backward outside, as Lightning does
    return torch.cat([p.grad.flatten() for p in base.parameters()])


def relative_error(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_chunked_grads_match_standard_under_bf16_autocast(chunk: int) -> None:
    # bf16 keeps 8 bits of mantissa (2**-8 = 3.9e-3): each chunk's weight gradient is rounded to
    # bf16 on its own, so chunked and standard differ by a few of those; 1.5e-2 allows that and
    # is 4x under what a float32 recomputation gives here (6.7e-2 with the old hand-written path).
    standard = autocast_grads(None, torch.float32, autocast=True)
    assert relative_error(autocast_grads(chunk, torch.float32, autocast=True), standard) < 1.5e-2
    exact = autocast_grads(None, torch.float64, autocast=False)  # float64: only reordering
    assert relative_error(autocast_grads(chunk, torch.float64, autocast=False), exact) < 1e-12


def test_chunked_recomputation_runs_in_the_forward_precision() -> None:
    # The mechanism behind the test above: every call of the first conv, the chunks' forward
    # and their recomputation in backward (run outside the autocast block), computes in bf16.
    dtypes: list[torch.dtype] = []
    base = precision_sensitive_base(torch.float32)
    base.block1[0].register_forward_hook(lambda _m, _a, out: dtypes.append(out.dtype))
    model = SetSumRegressor(base, k=2, chunk_size=1)
    images = torch.rand(1, 2, 1, 4, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prediction, _ = model.forward_sets(images, torch.zeros(1, 2, dtype=torch.bool))
    prediction.float().sum().backward()
    assert dtypes == [torch.bfloat16] * 4  # two chunks, each run twice


# -- memory -----------------------------------------------------------------------------------


def train_step_peak(k: int, chunk: int | str | None, threshold: int = 2**24) -> int:
    """Peak memory of one forward and backward of a single set of ``k`` real images."""
    torch.manual_seed(0)
    model = SetSumRegressor(BaseRegressor(), k=k, chunk_size=chunk, chunk_threshold=threshold)
    images = torch.randn(1, k, *SHAPE)
    zero = torch.zeros(1, k, dtype=torch.bool)
    return peak_bytes(lambda: model.forward_sets(images, zero)[0].sum().backward())


def test_memory_measurement_is_deterministic() -> None:
    assert train_step_peak(4, chunk=2) == train_step_peak(4, chunk=2)
    assert train_step_peak(4, chunk=None) == train_step_peak(4, chunk=None)


def test_chunked_memory_follows_the_chunk_not_k() -> None:
    per_image = (train_step_peak(16, None) - train_step_peak(4, None)) / 12  # standard path
    assert per_image > 50_000  # the activations of one 6^3 image: what the measurement sees
    # chunked: an image more costs its input copies, under 5% of its activations (k = 8 and up,
    # past the step where the peak moves from the forward to the backward of the last chunk)
    assert train_step_peak(32, chunk=2) - train_step_peak(8, chunk=2) < 24 * 0.05 * per_image
    # ... but a larger chunk does: its recomputed activations are alive at once in backward
    assert train_step_peak(16, chunk=4) - train_step_peak(16, chunk=1) > 2 * per_image


def test_chunk_size_is_validated() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        SetSumRegressor(BaseRegressor(), k=2, chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        SetSumRegressor(BaseRegressor(), k=2, chunk_size="always")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_threshold"):
        SetSumRegressor(BaseRegressor(), k=2, chunk_size="auto", chunk_threshold=0)


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


def test_chunking_is_off_without_gradients() -> None:
    calls: list[int] = []
    base = BaseRegressor()
    base.register_forward_pre_hook(lambda _, args: calls.append(args[0].shape[0]))
    model = SetSumRegressor(base, k=4, chunk_size=1)
    with torch.no_grad():  # nothing to recompute: one call, however small the chunk
        model.forward_sets(torch.rand(2, 4, *SHAPE), torch.zeros(2, 4, dtype=torch.bool))
    assert calls == [8]


def test_auto_chunking_bounds_memory_above_the_threshold() -> None:
    over = 2 * VOXELS  # chunks of two images
    per_image = (train_step_peak(16, "auto") - train_step_peak(4, "auto")) / 12  # under it
    assert per_image > 50_000  # under the default threshold: the standard path, which grows
    growth = train_step_peak(32, "auto", over) - train_step_peak(8, "auto", over)
    assert growth < 24 * 0.05 * per_image


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
