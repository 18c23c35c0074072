"""HydraModule: the loss on summed predictions, label scaling, evaluation metrics, bad settings."""

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from torch.nn import functional as F

from hydralab.data.datamodule import HydraDataModule
from hydralab.data.sets import SetSpec
from hydralab.training.metrics import agreement_metrics
from hydralab.training.module import HydraModule


def _batch(k: int, zero: list[list[bool]]) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    zero_mask = torch.tensor(zero)
    images = torch.rand(len(zero), k, 1, 8, 8, 8) * (~zero_mask)[..., None, None, None, None]
    labels = torch.rand(len(zero), k) * 10 * ~zero_mask
    return {"images": images, "zero": zero_mask, "labels": labels, "set_label": labels.sum(1)}


def test_hydranet_loss_is_computed_once_on_the_summed_prediction():
    module = HydraModule(method="hydranet", k=3, p=0.1)
    batch = _batch(3, [[False, True, False], [False, False, False]])
    loss = module.training_step(batch, 0)
    f = module.model.base
    per_slot = torch.stack(
        [
            torch.stack(
                [
                    f(batch["images"][b, s : s + 1])[0]
                    if not batch["zero"][b, s]
                    else f(torch.zeros(1, 1, 8, 8, 8))[0]
                    for s in range(3)
                ]
            )
            for b in range(2)
        ]
    )
    expected = F.mse_loss(per_slot.sum(1), batch["set_label"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # Not the mini-batch loss over the individual images:
    per_image = F.mse_loss(per_slot[~batch["zero"]], batch["labels"][~batch["zero"]])
    assert loss.item() != pytest.approx(per_image.item(), rel=1e-3)


def test_image_loss_steps_train_on_each_member_first_then_on_the_set():
    batch = _batch(3, [[False, True, False], [False, False, False]])
    warm = HydraModule(method="hydranet", k=3, p=0.1, zero_mode="skip", image_loss_steps=5)
    plain = HydraModule(method="hydranet", k=3, p=0.1, zero_mode="skip")
    plain.load_state_dict(warm.state_dict())
    _, values = warm.model.forward_sets(batch["images"], batch["zero"])
    real = ~batch["zero"]
    per_image = F.mse_loss(values[real], batch["labels"][real])
    # Step 0 < 5: the baseline's loss on the real members (empty slots left out).
    assert warm.training_step(batch, 0).item() == pytest.approx(per_image.item(), rel=1e-6)
    on_sets = F.mse_loss(values.sum(1), batch["set_label"])
    assert plain.training_step(batch, 0).item() == pytest.approx(on_sets.item(), rel=1e-6)
    assert per_image.item() != pytest.approx(on_sets.item(), rel=1e-3)


def test_mae_loss():
    module = HydraModule(method="hydranet", k=2, loss="mae")
    batch = _batch(2, [[False, False]])
    prediction, _ = module.model.forward_sets(batch["images"], batch["zero"])
    expected = (prediction - batch["set_label"]).abs().mean()
    assert module.training_step(batch, 0).item() == pytest.approx(expected.item(), rel=1e-6)


def test_non_finite_loss_stops_with_a_clear_error():
    module = HydraModule()
    batch = _batch(1, [[False], [False]])
    batch["set_label"] = torch.tensor([float("nan"), 1.0])
    with pytest.raises(FloatingPointError, match="loss became nan"):
        module.training_step(batch, 0)


def _fit(
    csv: Path, root: Path, validate: bool = True, **model_kwargs
) -> tuple[HydraModule, HydraDataModule]:
    kwargs = {"method": "hydranet", "k": 2, "p": 0.0, **model_kwargs}
    data = HydraDataModule(
        csv=str(csv), batch_size=4, **{k: kwargs[k] for k in ("method", "k", "p")}
    )
    module = HydraModule(**kwargs)
    trainer = pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=root,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=data)
    if validate:
        trainer.validate(module, datamodule=data, verbose=False)
    return module, data


def test_label_scale_from_training_labels_and_predictions_in_label_units(tiny_csv: Path, tmp_path):
    module, data = _fit(tiny_csv, tmp_path, label_scale="mean")
    train_labels = torch.tensor([s.record.label for s in data.scans["train"]])
    assert module.label_scale.item() == pytest.approx(train_labels.abs().mean().item())
    # The scale is a buffer: it is saved with the weights.
    assert "label_scale" in module.state_dict()
    val = data.scans["val"]
    images = torch.stack([s.data for s in val])[:, None]
    with torch.no_grad():
        raw = module.model.predict_scans(images[:, 0])
    predictions = module.last_predictions["val"]["prediction"]
    np.testing.assert_allclose(predictions, (raw * module.label_scale).numpy(), rtol=1e-5)


def test_logged_validation_metrics_are_those_of_the_predictions(tiny_csv: Path, tmp_path):
    module, data = _fit(tiny_csv, tmp_path)
    arrays = module.last_predictions["val"]
    assert len(arrays["label"]) == len(data.scans["val"])
    np.testing.assert_array_equal(arrays["label"], [s.record.label for s in data.scans["val"]])
    expected = agreement_metrics(arrays["prediction"], arrays["label"])
    logged = module.trainer.callback_metrics
    for name in ("mse", "mae", "icc_c1", "icc_a1", "pearson"):
        assert logged[f"val/{name}"].item() == pytest.approx(expected[name], rel=1e-5, abs=1e-6)


def test_f0_is_logged_each_training_epoch(tiny_csv: Path, tmp_path):
    module, _ = _fit(tiny_csv, tmp_path, validate=False)
    f0 = module.model.zero_value((1, 10, 10, 10))
    assert module.trainer.callback_metrics["train/f0"].item() == pytest.approx(float(f0), rel=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "both"}, "model.method"),
        ({"loss": "huber"}, "model.loss"),
        ({"optimizer": "Nope"}, "model.optimizer"),
        ({"label_scale": "median"}, "model.label_scale"),
        ({"label_scale": 0.0}, "model.label_scale must be positive"),
        ({"method": "baseline", "k": 4}, "baseline uses k=1"),
        ({"method": "hydranet", "k": 2, "p": 1.5}, "p "),
        ({"image_loss_steps": -1}, "model.image_loss_steps"),
        ({"lr": -1}, r"model.lr must be a finite number > 0, got -1"),
        ({"lr": 0.0}, r"model.lr must be a finite number > 0, got 0.0"),
        ({"lr": float("nan")}, "model.lr"),
        ({"label_scale": float("inf")}, "model.label_scale must be positive and finite"),
        ({"optimizer": "lr_scheduler"}, "model.optimizer 'lr_scheduler'"),
        (
            {"optimizer": "Adadelta", "optimizer_kwargs": {"rho": 2.0}},
            r"model.optimizer_kwargs \{'rho': 2.0\} for Adadelta",
        ),
        ({"optimizer": "SGD", "optimizer_kwargs": {"nope": 1}}, "model.optimizer_kwargs .*nope"),
        ({"zero_mode": "zero"}, "model.zero_mode"),
        ({"lr_schedule": "step"}, "model.lr_schedule"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HydraModule(**kwargs)


def test_default_optimizer_is_what_the_shipped_configs_use():
    """The help's defaults are the configs' (Adam at 1e-3); the paper's Adadelta stays one
    option away, with its rho 0.95."""
    configs = Path(__file__).resolve().parents[2] / "configs"
    used = set()
    for path in configs.glob("*/*.yaml"):
        model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
        if "optimizer" in model or "lr" in model:
            used.add((model.get("optimizer"), model.get("lr")))
    assert used == {("Adam", 1e-3)}
    optimizer = HydraModule().configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == 1e-3
    paper = HydraModule(optimizer="Adadelta", lr=1.0).configure_optimizers()
    assert isinstance(paper, torch.optim.Adadelta)
    assert paper.defaults["lr"] == 1.0 and paper.defaults["rho"] == 0.95


def test_training_targets_are_divided_by_the_label_scale():
    """Both losses (set and warm-up per image) compare f with label / scale, not the label."""
    batch = _batch(3, [[False, True, False], [False, False, False]])
    scaled = HydraModule(method="hydranet", k=3, p=0.1, label_scale=4.0, image_loss_steps=1)
    f = scaled.model.base
    with torch.no_grad():
        f_x = torch.stack([f(batch["images"][b, s : s + 1])[0] for b in range(2) for s in range(3)])
        f_0 = f(torch.zeros(1, 1, 8, 8, 8))[0]
    real = ~batch["zero"]
    per_slot = torch.where(real.reshape(-1), f_x, f_0).reshape(2, 3)
    with torch.no_grad():
        warm = scaled.training_step(batch, 0)  # step 0 < 1: per image
    expected = F.mse_loss(per_slot[real], batch["labels"][real] / 4.0)
    assert warm.item() == pytest.approx(expected.item(), rel=1e-5)
    assert warm.item() != pytest.approx(F.mse_loss(per_slot[real], batch["labels"][real]).item())

    scaled.hparams.image_loss_steps = 0
    with torch.no_grad():
        on_sets = scaled.training_step(batch, 0)
    expected = F.mse_loss(per_slot.sum(1), batch["set_label"] / 4.0)
    assert on_sets.item() == pytest.approx(expected.item(), rel=1e-5)
    assert on_sets.item() != pytest.approx(F.mse_loss(per_slot.sum(1), batch["set_label"]).item())


def test_label_scale_std_and_f0_logged_in_label_units(tiny_csv: Path, tmp_path):
    module, data = _fit(tiny_csv, tmp_path, validate=False, label_scale="std")
    train_labels = torch.tensor([s.record.label for s in data.scans["train"]])
    scale = train_labels.std().item()
    assert module.label_scale.item() == pytest.approx(scale, rel=1e-6)
    # The std, not the mean |label| of the other mode, and far from 1 so the f(0) check bites.
    assert scale != pytest.approx(train_labels.abs().mean().item(), rel=1e-2)
    assert abs(scale - 1.0) > 0.5
    f0 = float(module.model.zero_value((1, 10, 10, 10)))
    logged = module.trainer.callback_metrics["train/f0"].item()
    assert logged == pytest.approx(f0 * scale, rel=1e-4)
    assert logged != pytest.approx(f0, rel=1e-2)


@pytest.mark.parametrize("zero_mode", ["paper", "anchored"])
def test_image_loss_steps_in_paper_and_anchored_modes(zero_mode, monkeypatch):
    """Steps 0..2 of 3: the per-image loss on the real members' values (f(x) in paper mode,
    f(x) - f(0) anchored); from step 3: the set loss, where empty slots count (f(0) or 0)."""
    batch = _batch(3, [[False, True, False], [False, False, True]])
    module = HydraModule(method="hydranet", k=3, p=0.1, zero_mode=zero_mode, image_loss_steps=3)
    f = module.model.base
    with torch.no_grad():
        f_x = torch.stack([f(batch["images"][b, s : s + 1])[0] for b in range(2) for s in range(3)])
        f_0 = f(torch.zeros(1, 1, 8, 8, 8))[0]
    real = ~batch["zero"]
    if zero_mode == "paper":
        per_slot = torch.where(real.reshape(-1), f_x, f_0).reshape(2, 3)
    else:
        per_slot = torch.where(real.reshape(-1), f_x - f_0, torch.zeros(())).reshape(2, 3)
    per_image = F.mse_loss(per_slot[real], batch["labels"][real]).item()
    on_sets = F.mse_loss(per_slot.sum(1), batch["set_label"]).item()
    assert per_image != pytest.approx(on_sets, rel=1e-3)

    step = {"now": 0}
    monkeypatch.setattr(HydraModule, "global_step", property(lambda self: step["now"]))
    for step["now"], expected in [(0, per_image), (2, per_image), (3, on_sets), (10, on_sets)]:
        with torch.no_grad():
            loss = module.training_step(batch, 0).item()
        assert loss == pytest.approx(expected, rel=1e-5), step["now"]


def test_one_set_spec_and_the_config_keys_kept():
    """The module reads method and k from one SetSpec; the keys stay saved hyperparameters."""
    module = HydraModule(method="hydranet", k=3, p=0.25)
    assert module.sets == SetSpec("hydranet", 3, 0.25)
    assert module.model.k == 3
    assert {key: module.hparams[key] for key in ("method", "k", "p")} == {
        "method": "hydranet",
        "k": 3,
        "p": 0.25,
    }
    assert HydraModule().sets == SetSpec()


def test_image_loss_steps_leave_the_baseline_on_its_own_loss():
    """A baseline set is one scan: with or without the warm-up its loss is the per-image one."""
    batch = _batch(1, [[False], [False], [False]])
    warm = HydraModule(image_loss_steps=5).eval()  # eval: no batch statistics, deterministic
    plain = HydraModule().eval()
    plain.load_state_dict(warm.state_dict())
    with torch.no_grad():
        expected = F.mse_loss(warm.model.base(batch["images"][:, 0]), batch["set_label"])
        assert warm.training_step(batch, 0).item() == pytest.approx(expected.item(), rel=1e-6)
        assert plain.training_step(batch, 0).item() == pytest.approx(expected.item(), rel=1e-6)
