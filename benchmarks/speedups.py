"""Issue 7, item 4: which of PyTorch's speed switches pay for Hydranet's train step, here.

Prints one markdown table: the train step of Hydranet (K = 4, one set per 4 images, MSE on the
set sum, Adam) in images/s, median of repeated timings with the IQR, for each switch alone
against plain eager float32 on the same device in the same run:

* ``cudnn.benchmark``: cuDNN times its convolution algorithms once per shape (CUDA only);
* ``channels_last_3d``: model and batch in NDHWC memory order;
* ``bf16 autocast``: convolutions and the linear layer in bfloat16 (Lightning's
  ``precision: bf16-mixed``), float32 master weights;
* ``torch.compile``: the base regressor compiled by Inductor (compile time reported apart);
* ``float16 autocast + GradScaler`` (CUDA only): Lightning's ``precision: 16-mixed``.

A switch is worth a default only where its ratio clears the spread of the eager timings. The
step is ``bench.make_step``'s with Adam (the configs' optimiser) in place of Adadelta.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch
from bench import Row, markdown, timings
from torch.nn import functional as F

from hydralab.models.regressor import BaseRegressor
from hydralab.models.setsum import SetSumRegressor


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def make_step(
    side: int,
    batch: int,
    *,
    channels_last: bool = False,
    autocast: torch.dtype | None = None,
    compile_base: bool = False,
) -> Callable[[], None]:
    """One Hydranet K=4 train step with the given switches; each call is a full step."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    base = BaseRegressor()
    if compile_base:
        base = torch.compile(base)
    model = SetSumRegressor(base, k=4).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch // 4, 4, 1, side, side, side, generator=gen).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
        flat = images.flatten(0, 1).contiguous(memory_format=torch.channels_last_3d)
        images = flat.unflatten(0, (batch // 4, 4))
    zero = torch.zeros(batch // 4, 4, dtype=torch.bool, device=device)
    target = torch.rand(batch // 4, generator=gen).to(device)
    scaler = torch.amp.GradScaler(device) if autocast == torch.float16 else None

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=autocast or torch.float32, enabled=autocast is not None):
            prediction, _ = model.forward_sets(images, zero)
        loss = F.mse_loss(prediction.float(), target)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return step


def variants(cuda: bool) -> dict[str, dict]:
    out: dict[str, dict] = {
        "eager float32": {},
        "channels_last_3d": {"channels_last": True},
        "bf16 autocast": {"autocast": torch.bfloat16},
    }
    if cuda:
        out["cudnn.benchmark"] = {"benchmark": True}
        out["float16 autocast + GradScaler"] = {"autocast": torch.float16}
        out["cudnn.benchmark + bf16 + channels_last_3d"] = {
            "benchmark": True,
            "autocast": torch.bfloat16,
            "channels_last": True,
        }
    out["torch.compile"] = {"compile_base": True}  # last: its compilation may outlast a lease
    return out


def bench_variants(
    sides: list[int], batch: int, repeats: int, names: list[str] | None
) -> Iterator[Row]:
    """Rows one by one, so that a run stopped early (a compile that takes long) keeps the rest."""
    cuda = torch.cuda.is_available()
    for side in sides:
        reference = None
        for name, options in variants(cuda).items():
            if names and name not in names and name != "eager float32":
                continue
            options = dict(options)
            with cudnn_benchmark(options.pop("benchmark", False)):
                step = make_step(side, batch, **options)
                start = time.perf_counter()
                step()  # compilation, cuDNN autotuning and allocator warm-up, untimed
                if cuda:
                    torch.cuda.synchronize()
                first = time.perf_counter() - start
                times = timings(step, repeats, warmup=2)
            rate = [batch / t for t in times]
            reference = reference or statistics.median(rate)
            ratio = f"{statistics.median(rate) / reference:.2f}x eager"
            if options.get("compile_base"):
                ratio += f" (first step {first:.0f} s)"
            yield Row("speedup", f"{name} side {side}", rate, "img/s", ratio)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=None)
    parser.add_argument("--batch", type=int, default=None, help="images per step (x4)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="+", default=None, help="variant names to time")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    sides = args.sides or ([16, 64] if cuda else [16, 24])
    batch = args.batch or (16 if cuda else 8)
    device = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"hydralab speedups — torch {torch.__version__}, {device}, {batch} images/step\n")
    header = markdown([]).splitlines()
    print("\n".join(header), flush=True)
    for row in bench_variants(sides, batch, args.repeats, args.only):
        print(markdown([row]).splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
