"""HydraModule: trains the shared base regressor as a baseline or as Hydranet, evaluates per scan.

The only difference between the methods is the training target: Hydranet computes the loss once on
the sum of the K slot predictions against the sum of the K labels (see ``SetSumRegressor``); the
baseline is the same code with K = 1. Evaluation is always per scan, with the method's inference
rule, and reports MSE, MAE, ICC(3,1), ICC(2,1) and Pearson r.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Literal, get_args

import lightning.pytorch as pl
import numpy as np
import torch
from torch.nn import functional as F

from hydralab.data.sets import Method, SetSpec
from hydralab.models.regressor import BaseRegressor
from hydralab.models.setsum import DEFAULT_CHUNK_THRESHOLD, ChunkSize, SetSumRegressor
from hydralab.training.metrics import agreement_metrics

Loss = Literal["mse", "mae"]
LabelScale = float | Literal["mean", "std"]
LOSSES = {"mse": F.mse_loss, "mae": F.l1_loss}
ZeroMode = Literal["paper", "anchored", "skip"]
ZERO_MODES: tuple[str, ...] = get_args(ZeroMode)
LrSchedule = Literal["none", "cosine"]
LR_SCHEDULES: tuple[str, ...] = get_args(LrSchedule)


class HydraModule(pl.LightningModule):
    """The training loop's view of a baseline or Hydranet regressor.

    The Args below are also the help of ``hydralab fit --help``, so each says what the option
    does in a line or two; the reasons are here.

    ``method``, ``k`` and ``p`` stay config keys and saved hyperparameters (configs link them to
    ``data.*``); the module itself reads them from one :class:`SetSpec`, ``self.sets``.

    ``regressor`` is typed ``BaseRegressor`` rather than any ``nn.Module``: jsonargparse lists
    every known subclass of the type in ``--help``, ~500 torch.nn classes for ``nn.Module``.

    ``optimizer``/``lr`` are the one way to set the optimiser (the CLI's generic
    ``--optimizer``/``--lr_scheduler`` are switched off). Their defaults, Adam at 1e-3, are what
    every shipped config uses: the paper's Adadelta (lr 1.0, rho 0.95) reached validation ICC
    0.08 in 600 steps where Adam reached 0.71 (docs/method.md). It stays one option away.

    ``memory_chunk``: chunks are pushed through the network with activations recomputed in
    backward, so memory stops growing with K, at about one more forward pass of time; the loss
    and gradients are the same. ``memory_chunk_threshold``'s default, 2**24 voxels (about
    10 GiB of saved float32 activations for ``BaseRegressor``), keeps the CPU and GPU configs'
    sizes on the faster single-call path.

    ``image_loss_steps``: the set loss alone never left the constant-prediction plateau on the
    harder built-in task (docs/method.md); 0 is the paper's method.

    Args:
        regressor: the base regressor f of every slot (default ``BaseRegressor``; its
            options: ``--model.regressor.help BaseRegressor``).
        method: ``baseline`` or ``hydranet`` (linked to ``data.method``).
        k: scans per virtual sample (1 for the baseline; linked to ``data.k``).
        p: probability of an empty slot (linked to ``data.p``).
        loss: ``mse`` or ``mae``, once per set on the summed prediction.
        zero_mode: inference ``paper`` f(x) + (K-1) f(0), ``anchored`` f(x) - f(0), or
            ``skip`` f(x) (empty slots add 0, never shown to f).
        label_scale: train on labels divided by this (a number, or the training labels'
            ``mean`` or ``std``); predictions come back in label units.
        optimizer: a ``torch.optim`` class name; the paper's is ``Adadelta`` (with lr 1.0).
        lr: learning rate.
        optimizer_kwargs: further optimiser arguments (Adadelta: rho 0.95 unless given).
        lr_schedule: ``none`` or ``cosine`` (over the trainer's total steps).
        memory_chunk: images per network call in training (``auto``: chunk only above
            ``memory_chunk_threshold``; null: never).
        memory_chunk_threshold: the most voxels (images x voxels) per call under ``auto``;
            lower it to fit a smaller GPU.
        image_loss_steps: Hydranet only: train the first steps on the baseline's per-image loss.
    """

    def __init__(
        self,
        regressor: BaseRegressor | None = None,
        method: Method = "baseline",
        k: int = 1,
        p: float = 0.0,
        loss: Loss = "mse",
        zero_mode: ZeroMode = "paper",
        label_scale: LabelScale = 1.0,
        optimizer: str = "Adam",
        lr: float = 1e-3,
        optimizer_kwargs: dict[str, Any] | None = None,
        lr_schedule: LrSchedule = "none",
        memory_chunk: ChunkSize = "auto",
        memory_chunk_threshold: int = DEFAULT_CHUNK_THRESHOLD,
        image_loss_steps: int = 0,
    ) -> None:
        super().__init__()
        try:
            sets = SetSpec(method, k, p)
        except ValueError as error:
            raise ValueError(f"model.{error}") from None
        if loss not in LOSSES:
            raise ValueError(f"model.loss must be one of {sorted(LOSSES)}, got {loss!r}")
        _check_optimizer(optimizer, lr, optimizer_kwargs)
        if zero_mode not in ZERO_MODES:
            raise ValueError(f"model.zero_mode must be one of {ZERO_MODES}, got {zero_mode!r}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"model.lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}"
            )
        if isinstance(label_scale, str) and label_scale not in ("mean", "std"):
            raise ValueError(
                f"model.label_scale must be a number, 'mean' or 'std', got {label_scale!r}"
            )
        if isinstance(label_scale, (int, float)) and not 0 < label_scale < math.inf:
            raise ValueError(f"model.label_scale must be positive and finite, got {label_scale}")
        if memory_chunk not in (None, "auto") and (
            isinstance(memory_chunk, bool) or not isinstance(memory_chunk, int) or memory_chunk < 1
        ):
            raise ValueError(
                f"model.memory_chunk must be null, 'auto' or an integer >= 1, got {memory_chunk!r}"
            )
        if isinstance(memory_chunk_threshold, bool) or not (
            isinstance(memory_chunk_threshold, int) and memory_chunk_threshold >= 1
        ):
            raise ValueError(
                "model.memory_chunk_threshold must be an integer >= 1 (voxels), "
                f"got {memory_chunk_threshold!r}"
            )
        if isinstance(image_loss_steps, bool) or not (
            isinstance(image_loss_steps, int) and image_loss_steps >= 0
        ):
            raise ValueError(
                f"model.image_loss_steps must be an integer >= 0, got {image_loss_steps!r}"
            )
        self.save_hyperparameters(ignore=["regressor"])
        self.sets = sets
        self.model = SetSumRegressor(
            regressor or BaseRegressor(),
            k=sets.k,
            zero_mode=zero_mode,
            chunk_size=memory_chunk,
            chunk_threshold=memory_chunk_threshold,
        )
        self.loss_fn = LOSSES[loss]
        scale = 1.0 if isinstance(label_scale, str) else float(label_scale)
        # A buffer, so the scale learnt from the training labels travels with the checkpoint.
        self.register_buffer("label_scale", torch.tensor(scale))
        self._outputs: dict[str, list[dict[str, torch.Tensor]]] = {}
        self.last_predictions: dict[str, dict[str, np.ndarray]] = {}

    # -- set-up ---------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        mode = self.hparams.label_scale
        if stage != "fit" or not isinstance(mode, str):
            return
        labels = torch.tensor([s.record.label for s in self.trainer.datamodule.scans["train"]])
        value = labels.abs().mean() if mode == "mean" else labels.std()
        if not value > 0:
            raise ValueError(f"label_scale={mode!r} is {float(value)} on the training labels")
        self.label_scale.fill_(float(value))

    def configure_optimizers(self) -> Any:
        kwargs = _optimizer_kwargs(self.hparams.optimizer, self.hparams.optimizer_kwargs)
        optimizer_cls = getattr(torch.optim, self.hparams.optimizer)
        optimizer = optimizer_cls(self.parameters(), lr=self.hparams.lr, **kwargs)
        if self.hparams.lr_schedule == "none":
            return optimizer
        total = self.trainer.estimated_stepping_batches
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(total)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- training -------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        prediction, values = self.model.forward_sets(batch["images"], batch["zero"])
        real = ~batch["zero"]
        # The baseline's sets are single scans: its set loss is already the per-image loss.
        warm_up = not self.sets.is_baseline and self.global_step < self.hparams.image_loss_steps
        if warm_up and real.any():
            loss = self.loss_fn(values[real], batch["labels"][real].float() / self.label_scale)
        else:
            loss = self.loss_fn(prediction, batch["set_label"].float() / self.label_scale)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {loss.item()} at step {self.global_step}; lower model.lr "
                "or set model.label_scale"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["images"].shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        # How far f(0) drifts matters: in paper mode it adds (K-1) f(0) to every prediction.
        shape = self.trainer.datamodule.scans["train"][0].data.shape
        self.log("train/f0", self.model.zero_value(tuple(shape)) * self.label_scale)

    # -- evaluation -----------------------------------------------------------------------------

    def predict_scans(self, images: torch.Tensor) -> torch.Tensor:
        """Per-scan predictions in label units for a (B, 1, C, D, H, W) evaluation batch."""
        return self.model.predict_scans(images[:, 0]) * self.label_scale

    def _evaluate(self, split: str, batch: dict[str, torch.Tensor]) -> None:
        self._outputs.setdefault(split, []).append(
            {
                "index": batch["index"][:, 0].cpu(),
                "label": batch["labels"][:, 0].float().cpu(),
                "prediction": self.predict_scans(batch["images"]).float().cpu(),
            }
        )

    def _evaluation_end(self, split: str) -> None:
        outputs = self._outputs.pop(split, [])
        if not outputs:
            return
        arrays = {key: torch.cat([o[key] for o in outputs]).numpy() for key in outputs[0]}
        self.last_predictions[split] = arrays
        if len(arrays["label"]) < 2:
            return  # agreement needs at least two scans (Lightning's sanity check has fewer)
        metrics = agreement_metrics(arrays["prediction"], arrays["label"])
        self.log_dict({f"{split}/{name}": float(value) for name, value in metrics.items()})

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._evaluation_end("val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate("test", batch)

    def on_test_epoch_end(self) -> None:
        self._evaluation_end("test")

    def predict_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int
    ) -> dict[str, torch.Tensor]:
        return {"index": batch["index"][:, 0], "prediction": self.predict_scans(batch["images"])}


def _check_optimizer(name: str, lr: float, kwargs: dict[str, Any] | None) -> None:
    """Build the optimiser once on a dummy parameter, so a bad ``model.lr`` or
    ``model.optimizer_kwargs`` stops the run before any scan is read, naming the key (torch's
    own error, raised at the first training step, names neither)."""
    optimizer_cls = getattr(torch.optim, str(name), None)
    if not (inspect.isclass(optimizer_cls) and issubclass(optimizer_cls, torch.optim.Optimizer)):
        raise ValueError(f"model.optimizer {name!r} is not a torch.optim optimiser class")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < math.inf:
        raise ValueError(f"model.lr must be a finite number > 0, got {lr!r}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ValueError(f"model.optimizer_kwargs must be a mapping, got {kwargs!r}")
    kwargs = _optimizer_kwargs(name, kwargs)
    try:
        optimizer_cls([torch.zeros(1, requires_grad=True)], lr=lr, **kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"model.optimizer_kwargs {kwargs} for {name}: {error}") from None


def _optimizer_kwargs(name: str, kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The optimiser's further arguments: the paper's rho 0.95 for Adadelta unless given."""
    if kwargs is None:
        return {"rho": 0.95} if name == "Adadelta" else {}
    return dict(kwargs)
