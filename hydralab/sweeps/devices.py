"""Which GPUs each local sweep worker sees: its own, so that N workers do not all train on GPU 0.

``hydralab sweep --workers N`` starts N processes. Each gets its own ``CUDA_VISIBLE_DEVICES``
(:func:`worker_environments`), set before it imports torch, so its trials' ``cuda:0`` is the GPU
it was given. ``--gpus-per-worker`` (default 1 where GPUs exist) says how many:

- a whole number k: worker i takes the k GPUs ``i*k .. i*k+k-1`` of those visible, never shared;
- a share 1/m (0.5, 0.25): workers take the GPUs round-robin, at most m workers on one GPU;
- 0: the workers see no GPU and train on the CPU.

More workers than that fits is refused (:class:`DeviceError`), never packed onto a GPU beyond
what was asked. A machine without GPUs gets no assignment: workers run as before. The GPUs
visible are those of ``CUDA_VISIBLE_DEVICES`` when set (so ``CUDA_VISIBLE_DEVICES=2,3`` hands out
GPUs 2 and 3), else every GPU torch counts. On SLURM the scheduler sets each job's devices
instead (``slurm.gpus``; see :mod:`hydralab.sweeps.slurm`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

VISIBLE = "CUDA_VISIBLE_DEVICES"
T = TypeVar("T")


class DeviceError(ValueError):
    """The workers asked for do not fit on the visible GPUs; one line saying what to change."""


def visible_gpus(
    environ: Mapping[str, str] = os.environ, count: Callable[[], int] | None = None
) -> list[str]:
    """The GPUs this process may hand out, as ``CUDA_VISIBLE_DEVICES`` names them.

    ``CUDA_VISIBLE_DEVICES``'s entries when it is set (indices, or ``GPU-...``/``MIG-...``
    UUIDs; CUDA ignores everything from the first invalid entry on, so does this); otherwise
    ``0 .. count()-1``, where ``count`` defaults to ``torch.cuda.device_count``.
    """
    if VISIBLE in environ:
        gpus = []
        for entry in (part.strip() for part in environ[VISIBLE].split(",")):
            if not entry or entry.startswith("-"):
                break
            gpus.append(entry)
        return gpus
    if count is None:
        import torch

        count = torch.cuda.device_count
    return [str(index) for index in range(count())]


def assign_gpus(
    workers: int, gpus: Sequence[str], per_worker: float | None = None
) -> list[tuple[str, ...]]:
    """Each worker's GPUs (see the module's docstring); empty tuples where there are none.

    Raises:
        DeviceError: ``per_worker`` is not 0, a whole number or 1/m, or the workers do not fit
            on ``gpus`` without sharing a GPU more than ``per_worker`` allows.
    """
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if not gpus:
        return [() for _ in range(workers)]
    per_worker = 1.0 if per_worker is None else float(per_worker)
    if per_worker == 0:
        return [() for _ in range(workers)]
    if per_worker < 0 or not (per_worker.is_integer() or _share(per_worker)):
        raise DeviceError(
            f"--gpus-per-worker must be 0, a whole number or a share 1/m (0.5, 0.25), "
            f"got {per_worker:g}"
        )
    if per_worker >= 1:
        k = int(per_worker)
        needed, fits = workers * k, workers * k <= len(gpus)
        assigned = [tuple(gpus[i * k : (i + 1) * k]) for i in range(workers)] if fits else []
    else:
        sharing = _share(per_worker)
        needed, fits = math.ceil(workers / sharing), workers <= sharing * len(gpus)
        assigned = [(gpus[i % len(gpus)],) for i in range(workers)]
    if not fits:
        raise DeviceError(
            f"--workers {workers} at --gpus-per-worker {per_worker:g} needs {needed} GPU(s), and "
            f"{len(gpus)} are visible ({','.join(gpus)}): lower --workers, or share GPUs with "
            "--gpus-per-worker 0.5"
        )
    return assigned


def _share(per_worker: float) -> int:
    """m where ``per_worker`` is 1/m (0.5 -> 2), else 0."""
    if not 0 < per_worker < 1:
        return 0
    sharing = round(1 / per_worker)
    return sharing if math.isclose(per_worker * sharing, 1, rel_tol=1e-6) else 0


def worker_environments(
    workers: int, per_worker: float | None = None, gpus: Sequence[str] | None = None
) -> list[dict[str, str]]:
    """The environment variables each local worker starts with: its ``CUDA_VISIBLE_DEVICES``.

    ``gpus`` defaults to :func:`visible_gpus`. A machine without GPUs gets an empty dict per
    worker (nothing changes); ``per_worker=0`` hides the GPUs (``CUDA_VISIBLE_DEVICES=""``).
    """
    gpus = visible_gpus() if gpus is None else gpus
    if not gpus:
        return [{} for _ in range(workers)]
    return [{VISIBLE: ",".join(mine)} for mine in assign_gpus(workers, gpus, per_worker)]


def assignment_line(environments: Sequence[Mapping[str, str]]) -> str | None:
    """The workers' GPUs in one line (``worker 0: GPU 0; worker 1: GPU 1``) for the sweep's log,
    or None when nothing was assigned (a machine without GPUs)."""
    if not any(VISIBLE in environment for environment in environments):
        return None
    return "; ".join(
        f"worker {index}: " + (f"GPU {env[VISIBLE]}" if env.get(VISIBLE) else "no GPU (CPU)")
        for index, env in enumerate(environments)
    )


def run_with_environment(environment: Mapping[str, str], target: Callable[..., T], *args: Any) -> T:
    """Set ``environment`` in this process, then call ``target(*args)``: a spawned worker's entry
    point, so its variables are set before anything in it imports torch."""
    os.environ.update(environment)
    return target(*args)


def describe_device(
    device: Any,
    environ: Mapping[str, str] = os.environ,
    name: Callable[[int], str] | None = None,
) -> str:
    """The device a trial trained on, as a trial attribute: ``cpu``, or for a GPU its index in the
    worker, the GPU the machine knows it as and its model (``cuda:0 = GPU 3 (NVIDIA H200)``).

    ``device`` is a ``torch.device`` or its text (``trainer.strategy.root_device``); ``name``
    defaults to ``torch.cuda.get_device_name``.
    """
    text = str(device)
    kind, _, index_text = text.partition(":")
    if kind != "cuda":
        return text
    index = int(index_text or 0)
    visible = visible_gpus(environ, count=lambda: index + 1)
    physical = visible[index] if index < len(visible) else str(index)
    if name is None:
        import torch

        name = torch.cuda.get_device_name
    return f"cuda:{index} = GPU {physical} ({name(index)})"
