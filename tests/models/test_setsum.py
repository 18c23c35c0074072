"""SetSumRegressor: the one-call set model equals the paper's K weight-sharing branches."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from hydralab.models.regressor import BaseRegressor
from hydralab.models.setsum import SetSumRegressor

SHAPE = (1, 8, 8, 8)  # (C, D, H, W): small, the tests run on two shared CPU cores


def make_base(seed: int = 0) -> BaseRegressor:
    torch.manual_seed(seed)
    return BaseRegressor().double()


def make_mask(kind: str, b: int, k: int, gen: torch.Generator) -> Tensor:
    if kind == "all_zero":
        return torch.ones(b, k, dtype=torch.bool)
    if kind == "none_zero":
        return torch.zeros(b, k, dtype=torch.bool)
    mask = torch.rand(b, k, generator=gen) < 0.5
    mask[0, 0], mask[-1, -1] = True, False  # mixed: at least one empty and one real slot
    return mask


def naive_sets(base: nn.Module, images: Tensor, zero: Tensor, zero_mode: str) -> Tensor:
    """The paper's K branches literally: every slot through the network, empty slots as zeros."""
    total = images.new_zeros(images.shape[0])
    for slot in range(images.shape[1]):
        empty = zero[:, slot].reshape(-1, 1, 1, 1, 1)
        x = torch.where(empty, torch.zeros_like(images[:, slot]), images[:, slot])
        value = base(x)
        if zero_mode == "anchored":
            value = value - base(torch.zeros_like(x))
        if zero_mode == "skip":
            value = torch.where(zero[:, slot], torch.zeros_like(value), value)
        total = total + value
    return total


def grads(module: nn.Module) -> dict[str, Tensor]:
    return {
        name: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
        for name, p in module.named_parameters()
    }


@pytest.mark.parametrize("zero_mode", ["paper", "anchored", "skip"])
@pytest.mark.parametrize("mask_kind", ["random", "all_zero", "none_zero"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_forward_sets_matches_naive_branches(k: int, mask_kind: str, zero_mode: str) -> None:
    gen = torch.Generator().manual_seed(100 * k + len(mask_kind))
    b = 3 if k < 4 else 2
    images = torch.rand(b, k, *SHAPE, generator=gen, dtype=torch.float64)
    zero = make_mask(mask_kind, b, k, gen)
    images[zero] = torch.rand(*SHAPE, generator=gen, dtype=torch.float64)  # must be ignored
    targets = torch.randn(b, generator=gen, dtype=torch.float64)

    base = make_base()
    model = SetSumRegressor(base, k=k, zero_mode=zero_mode)
    pred, values = model.forward_sets(images, zero)
    loss = nn.functional.mse_loss(pred, targets)
    loss.backward()
    fast_grads = grads(base)

    base.zero_grad(set_to_none=True)
    naive_pred = naive_sets(base, images, zero, zero_mode)
    naive_loss = nn.functional.mse_loss(naive_pred, targets)
    naive_loss.backward()

    assert pred.shape == (b,)
    assert values.shape == (b, k)
    torch.testing.assert_close(values.sum(dim=1), pred)
    torch.testing.assert_close(pred, naive_pred, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, naive_loss, rtol=1e-5, atol=1e-5)
    for name, grad in grads(base).items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-5, atol=1e-5, msg=name)
    if zero_mode in ("anchored", "skip"):
        assert (values[zero] == 0).all()  # an empty slot adds exactly nothing


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("zero_mode", ["paper", "anchored", "skip"])
def test_predict_scans_is_the_set_model_with_empty_slots(k: int, zero_mode: str) -> None:
    base = make_base().eval()
    model = SetSumRegressor(base, k=k, zero_mode=zero_mode)
    x = torch.rand(3, *SHAPE, dtype=torch.float64)
    with torch.no_grad():
        pred = model.predict_scans(x)
        f_x = base(x)
        f_zero = base(torch.zeros(2, *SHAPE, dtype=torch.float64))[0]
        sets = torch.zeros(3, k, *SHAPE, dtype=torch.float64)
        sets[:, 0] = x
        zero = torch.zeros(3, k, dtype=torch.bool)
        zero[:, 1:] = True
        set_pred, _ = model.forward_sets(sets, zero)

    expected = {"paper": f_x + (k - 1) * f_zero, "anchored": f_x - f_zero, "skip": f_x}[zero_mode]
    torch.testing.assert_close(pred, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(pred, set_pred, rtol=1e-6, atol=1e-6)
    if zero_mode == "paper" and k == 1:
        torch.testing.assert_close(pred, f_x, rtol=0, atol=0)  # the plain baseline
    if zero_mode == "anchored":
        empty = model.predict_scans(torch.zeros(2, *SHAPE, dtype=torch.float64))
        assert (empty == 0).all()


def test_zero_value_is_f_of_an_empty_scan() -> None:
    base = make_base().eval()
    model = SetSumRegressor(base, k=2)
    value = model.zero_value(SHAPE)
    assert value.shape == ()
    assert value.dtype == torch.float64
    assert not value.requires_grad
    with torch.no_grad():
        expected = base(torch.zeros(2, *SHAPE, dtype=torch.float64))[0]
    torch.testing.assert_close(value, expected)


class CallRecorder:
    """Counts calls of a module and the batch size of each call, via a forward hook."""

    def __init__(self, module: nn.Module):
        self.batch_sizes: list[int] = []
        module.register_forward_hook(self)

    def __call__(self, module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        self.batch_sizes.append(args[0].shape[0])


@pytest.mark.parametrize("zero_mode", ["paper", "anchored", "skip"])
@pytest.mark.parametrize("mask_kind", ["random", "all_zero", "none_zero"])
def test_base_runs_once_on_real_slots_plus_one_zero(mask_kind: str, zero_mode: str) -> None:
    gen = torch.Generator().manual_seed(7)
    b, k = 2, 3
    base = make_base()
    recorder = CallRecorder(base)
    model = SetSumRegressor(base, k=k, zero_mode=zero_mode)
    zero = make_mask(mask_kind, b, k, gen)
    with torch.no_grad():
        model.forward_sets(torch.rand(b, k, *SHAPE, dtype=torch.float64), zero)
    n_real = int((~zero).sum())
    # skip never shows f the zero image; paper needs f(0) only when a slot is empty.
    extra = int(zero_mode == "anchored" or (zero_mode == "paper" and bool(zero.any())))
    assert recorder.batch_sizes == [n_real + extra]


@pytest.mark.parametrize(
    ("zero_mode", "k", "expected"),
    [("paper", 1, 2), ("paper", 3, 3), ("anchored", 1, 3), ("skip", 3, 2)],
)
def test_predict_scans_runs_base_once(zero_mode: str, k: int, expected: int) -> None:
    base = make_base()
    recorder = CallRecorder(base)
    model = SetSumRegressor(base, k=k, zero_mode=zero_mode)
    with torch.no_grad():
        model.predict_scans(torch.rand(2, *SHAPE, dtype=torch.float64))
    assert recorder.batch_sizes == [expected]


def test_single_set_batch() -> None:
    base = make_base()
    model = SetSumRegressor(base, k=2)
    images = torch.rand(1, 2, *SHAPE, dtype=torch.float64)
    zero = torch.tensor([[False, True]])
    pred, values = model.forward_sets(images, zero)
    with torch.no_grad():
        expected = naive_sets(base, images, zero, "paper")
    assert pred.shape == (1,) and values.shape == (1, 2)
    torch.testing.assert_close(pred.detach(), expected)


def test_rejects_bad_arguments() -> None:
    base = make_base()
    for bad_k in (0, 2.0, True):  # the set rules' check (hydralab.data.sets.check_k_p)
        with pytest.raises(ValueError, match=r"k \(images per virtual sample\) must"):
            SetSumRegressor(base, k=bad_k)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="zero_mode"):
        SetSumRegressor(base, k=2, zero_mode="centered")  # type: ignore[arg-type]
    model = SetSumRegressor(base, k=2)
    images = torch.rand(2, 2, *SHAPE, dtype=torch.float64)
    with pytest.raises(ValueError, match="zero must"):
        model.forward_sets(images, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="k=2"):
        model.forward_sets(torch.rand(2, 3, *SHAPE), torch.zeros(2, 3, dtype=torch.bool))
