"""BaseRegressor: the paper's size, any input size, dropout only while training."""

from __future__ import annotations

import pytest
import torch

from hydralab.models.regressor import BaseRegressor


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_matches_paper_architecture() -> None:
    assert n_params(BaseRegressor()) == 196_418


def test_layers_match_paper_figure() -> None:
    # Four 3x3x3 convs, one max pool, a dropout after each conv and after pooling (the ablation).
    model = BaseRegressor(dropout=0.1, pool_dropout=0.2)
    kinds = [type(m).__name__ for m in model.modules()]
    assert kinds.count("Conv3d") == 4
    assert kinds.count("MaxPool3d") == 1
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.1] * 4 + [0.2]
    assert all(
        m.kernel_size == (3, 3, 3) for m in model.modules() if isinstance(m, torch.nn.Conv3d)
    )


def test_channel_arithmetic_follows_in_channels() -> None:
    # Only the first conv (27 weights per input channel), the second block's first conv (27 * 64
    # per extra skip channel) and the head (1 per extra skip channel) grow with in_channels.
    extra = n_params(BaseRegressor(in_channels=3)) - n_params(BaseRegressor())
    assert extra == 2 * (32 * 27 + 64 * 27 + 1)
    model = BaseRegressor(in_channels=3).eval()
    assert model(torch.randn(2, 3, 8, 8, 8)).shape == (2,)


@pytest.mark.parametrize("size", [(8, 8, 8), (9, 10, 11), (2, 3, 2), (12, 8, 9)])
def test_output_is_one_value_per_scan_for_any_size(size: tuple[int, int, int]) -> None:
    model = BaseRegressor().eval()
    out = model(torch.randn(3, 1, *size))
    assert out.shape == (3,)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_rejects_wrong_shapes() -> None:
    model = BaseRegressor()
    with pytest.raises(ValueError, match="expected images"):
        model(torch.randn(2, 2, 8, 8, 8))
    with pytest.raises(ValueError, match=">= 2"):
        model(torch.randn(2, 1, 8, 1, 8))
    with pytest.raises(ValueError, match="dropout"):
        BaseRegressor(dropout=1.0)


def test_dropout_only_in_train_mode() -> None:
    torch.manual_seed(0)
    model = BaseRegressor(dropout=0.5, pool_dropout=0.5)
    x = torch.rand(2, 1, 8, 8, 8)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    model.train()
    with torch.no_grad():
        c, d = model(x), model(x)
    assert not torch.allclose(c, d)
    assert not torch.allclose(c, a)


def test_without_dropout_train_and_eval_agree() -> None:
    model = BaseRegressor()
    x = torch.rand(2, 1, 8, 8, 8)
    with torch.no_grad():
        train_out = model.train()(x)
        eval_out = model.eval()(x)
    torch.testing.assert_close(train_out, eval_out, rtol=0, atol=0)
