"""Hydranet's cost side by side: prints one markdown table, every figure measured in this run.

Each figure is the median of repeated timings with its interquartile range (IQR). Rows:

* ``step``: train-step throughput (forward, MSE on the set sum, backward, Adadelta step) of the
  baseline (K = 1) and of Hydranet at K = 2, 4, 8, with the same number of images per step; the
  ratio is Hydranet's time per image over the baseline's (goal <= 1.05).
* ``zero-slot``: Hydranet K = 4 with exactly round(p x slots) empty slots; empty slots are not
  pushed through the network (paper mode computes f(0) once), so the saving is the drop in step
  time against p = 0.
* ``data``: images/s out of the HydraDataModule's train DataLoader, TorchIO augmentation
  included, on a synthetic ``blobs`` dataset; the ratio is data over the model's train step.
* ``data`` (augmentation): images/s of the training augmentation alone at the default scan size
  (20^3), TorchIO per scan on the CPU (the DataLoader's path, one process) against
  ``BatchAugmentation`` on the whole batch on the train device (``data.augment_on: device``);
  the ratio is batched over TorchIO.
* ``memory``: peak memory of one step against K (one set per step), standard and chunked
  (``chunk_size``). On CUDA: ``torch.cuda.max_memory_allocated`` above the step's start. On CPU
  there is no allocator peak to read, so it is the peak of the bytes held by the tensors the
  step's operators create (``hydralab.models.memory.LiveBytes``: activations, the chunked
  path's recomputation and the gradients, each storage counted while alive; parameters and
  inputs left out): the memory that grows with K.
* ``flops``: the train step's achieved FLOP/s (convolutions counted analytically, backward taken
  as 2x forward) as a fraction of a large float32 matmul's FLOP/s measured in the same run.

Timings taken while other processes use the cores are noisy; the IQR shows how much.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from hydralab.models.memory import peak_bytes
from hydralab.models.regressor import BaseRegressor
from hydralab.models.setsum import SetSumRegressor

COLUMNS = ("measure", "setting", "median", "IQR", "unit", "ratio")


@dataclass
class Row:
    measure: str
    setting: str
    values: list[float]
    unit: str
    ratio: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def cells(self) -> list[str]:
        if len(self.values) > 1:
            q1, _, q3 = statistics.quantiles(self.values, n=4, method="inclusive")
            spread = f"{q1:.3g}–{q3:.3g}"
        else:
            spread = "–"
        return [self.measure, self.setting, f"{self.median:.3g}", spread, self.unit, self.ratio]


WARMUP = 1  # untimed calls before each timing (0 in --quick, a smoke run)


def timings(fn: Callable[[], object], repeats: int, warmup: int | None = None) -> list[float]:
    """Seconds per call of ``fn``, ``repeats`` times after ``warmup`` untimed calls."""
    for _ in range(WARMUP if warmup is None else warmup):
        fn()
    out = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(time.perf_counter() - start)
    return out


def conv_flops_per_image(side: int) -> float:
    """Forward FLOPs (2 per multiply-add) of BaseRegressor's four 3x3x3 convs on a cube."""
    full, half = side**3, (side // 2) ** 3
    layers = ((1, 32, full), (32, 32, full), (33, 64, half), (64, 64, half))
    return sum(2 * 27 * c_in * c_out * voxels for c_in, c_out, voxels in layers)


def make_step(
    k: int, side: int, images_per_step: int, p: float = 0.0, chunk: int | None = None
) -> Callable[[], None]:
    """One training step of K-slot sets holding ``images_per_step`` slots in all."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = SetSumRegressor(BaseRegressor(), k=k, chunk_size=chunk).to(device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0, rho=0.95)
    sets = max(1, images_per_step // k)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(sets, k, 1, side, side, side, generator=gen).to(device)
    # exactly round(p * slots) empty slots, so small batches still show p's effect
    empty = torch.randperm(sets * k, generator=gen)[: round(p * sets * k)]
    zero = torch.zeros(sets * k, dtype=torch.bool).index_fill(0, empty, True)
    zero = zero.reshape(sets, k).to(device)
    target = torch.rand(sets, generator=gen).to(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        prediction, _ = model.forward_sets(images, zero)
        F.mse_loss(prediction, target).backward()
        optimizer.step()

    return step


def bench_steps(sides: list[int], ks: list[int], batch: int, repeats: int) -> list[Row]:
    rows = []
    for side in sides:
        base_times = timings(make_step(1, side, batch), repeats)
        rows.append(Row("step", f"baseline side {side}", [batch / t for t in base_times], "img/s"))
        for k in ks:
            times = timings(make_step(k, side, batch), repeats)
            ratio = statistics.median(times) / statistics.median(base_times)
            rows.append(
                Row(
                    "step",
                    f"hydranet K={k} side {side}",
                    [batch / t for t in times],
                    "img/s",
                    f"{ratio:.2f}x baseline time/img",
                )
            )
    return rows


def bench_zero_slots(side: int, batch: int, repeats: int, ps: list[float]) -> list[Row]:
    rows, reference = [], None
    for p in ps:
        times = timings(make_step(4, side, batch, p=p), repeats)
        reference = reference or statistics.median(times)
        saving = 1 - statistics.median(times) / reference
        rows.append(
            Row(
                "zero-slot",
                f"K=4 p={p} side {side}",
                [batch / t for t in times],
                "slots/s",
                f"{saving:+.0%} time saved vs p=0",
            )
        )
    return rows


def bench_data(side: int, batch: int, repeats: int, n_train: int) -> list[Row]:
    """Images/s out of the augmented train DataLoader against the train step at the same size."""
    from hydralab.data.datamodule import HydraDataModule
    from hydralab.datasets.synthetic import SyntheticSpec, make_dataset

    k = 4 if batch % 4 == 0 else batch
    with tempfile.TemporaryDirectory() as tmp:
        spec = SyntheticSpec("blobs", n_train=n_train, n_val=1, n_test=1, size=side)
        csv = make_dataset(spec, tmp)
        data = HydraDataModule(str(csv), method="hydranet", k=k, batch_size=batch)
        data.setup("fit")

        def epoch() -> int:
            return sum(b["images"].shape[0] * k for b in data.train_dataloader())

        images = epoch()
        data_rate = [images / t for t in timings(epoch, repeats, warmup=0)]
    step_times = timings(make_step(k, side, batch), repeats)
    model_rate = statistics.median(batch / t for t in step_times)
    ratio = statistics.median(data_rate) / model_rate
    return [
        Row("data", f"DataLoader K={k} side {side}", data_rate, "img/s", f"{ratio:.1f}x train step")
    ]


def bench_augment(side: int, batch: int, repeats: int) -> list[Row]:
    """Images/s of TorchIO's per-scan augmentation against the batched one on the train device."""
    import torchio as tio

    from hydralab.data.device_augment import BatchAugmentation
    from hydralab.data.transforms import augmentation

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(0)
    scans = torch.rand(batch, 1, side, side, side, generator=gen)
    affine = torch.eye(4, dtype=torch.float64)
    per_scan = augmentation()

    def cpu_batch() -> torch.Tensor:
        # as SetDataset.image does it, scan by scan
        subjects = (tio.Subject(image=tio.ScalarImage(tensor=s, affine=affine)) for s in scans)
        return torch.stack([per_scan(subject)["image"].data.float() for subject in subjects])

    batched = BatchAugmentation(affine=affine)
    on_device = scans.to(device)
    cpu_rate = [batch / t for t in timings(cpu_batch, repeats)]
    device_rate = [batch / t for t in timings(lambda: batched(on_device), repeats)]
    ratio = statistics.median(device_rate) / statistics.median(cpu_rate)
    return [
        Row("data", f"augment TorchIO cpu side {side}", cpu_rate, "img/s"),
        Row(
            "data",
            f"augment batched {device} side {side}",
            device_rate,
            "img/s",
            f"{ratio:.1f}x TorchIO",
        ),
    ]


def bench_memory(side: int, ks: list[int], chunk: int) -> list[Row]:
    on_cuda = torch.cuda.is_available()
    unit = "MiB (CUDA peak)" if on_cuda else "MiB (live tensors)"
    rows = []
    for label, chunk_size in (("standard", None), (f"chunked {chunk}", chunk)):
        peaks = {}
        for k in ks:
            step = make_step(k, side, images_per_step=k, chunk=chunk_size)
            step()  # optimiser state and allocator warm-up outside the measurement
            if on_cuda:
                torch.cuda.synchronize()
                start = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                step()
                torch.cuda.synchronize()
                peaks[k] = torch.cuda.max_memory_allocated() - start
            else:
                peaks[k] = peak_bytes(step)
        for k in ks:
            ratio = f"{peaks[k] / peaks[ks[0]]:.2f}x K={ks[0]}" if k != ks[0] else ""
            rows.append(
                Row("memory", f"{label} K={k} side {side}", [peaks[k] / 2**20], unit, ratio)
            )
    return rows


def bench_flops(side: int, batch: int, repeats: int, matmul: int) -> list[Row]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(matmul, matmul, device=device)
    b = torch.randn(matmul, matmul, device=device)
    mm_times = timings(lambda: a @ b, repeats)
    mm_rate = [2 * matmul**3 / t / 1e9 for t in mm_times]
    k = 4 if batch % 4 == 0 else batch
    step_times = timings(make_step(k, side, batch), repeats)
    flops = 3 * conv_flops_per_image(side) * batch
    step_rate = [flops / t / 1e9 for t in step_times]
    fraction = statistics.median(step_rate) / statistics.median(mm_rate)
    return [
        Row("flops", f"matmul {matmul}² float32", mm_rate, "GFLOP/s"),
        Row(
            "flops",
            f"train step K={k} side {side}",
            step_rate,
            "GFLOP/s",
            f"{fraction:.0%} of matmul",
        ),
    ]


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in seconds")
    parser.add_argument("--repeats", type=int, default=None, help="timings per figure")
    parser.add_argument(
        "--sides", type=int, nargs="+", default=None, help="volume sides of the step rows"
    )
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    global WARMUP
    if args.quick:
        WARMUP = 0
        sides, ks, batch, repeats = [6], [2], 2, args.repeats or 2
        mem_ks, mem_side, data_side, n_train, matmul = [2, 4], 6, 12, 2, 256
        augment_side = 12
    else:
        sides = [16, 24, 32, 64, 96] if cuda else [16, 24, 32]
        ks, batch, repeats = [2, 4, 8], 8, args.repeats or 3
        mem_ks, mem_side, data_side, n_train = [4, 8, 16, 32], 24, 24, 32
        augment_side = 20  # the built-in datasets' default size
        matmul = 8192 if cuda else 2048
    sides = args.sides or sides
    torch.manual_seed(0)
    rows = bench_steps(sides, ks, batch, repeats)
    # twice the batch, so that p = 0.1 empties a slot beyond the one f(0) costs in paper mode
    rows += bench_zero_slots(sides[0], 2 * batch, repeats, [0.0, 0.1, 0.5])
    rows += bench_data(data_side, batch, repeats, n_train)
    rows += bench_augment(augment_side, batch, repeats)
    rows += bench_memory(mem_side, mem_ks, chunk=2)
    rows += bench_flops(sides[0], batch, repeats, matmul)
    device = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"hydralab bench — torch {torch.__version__}, {device}, {batch} images/step\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
