"""Local sweep workers' GPUs, with faked device lists: each worker its own GPU(s), round-robin
shares never beyond what was asked, CPU-only machines unchanged, and the device a trial names."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from hydralab.sweeps.devices import (
    VISIBLE,
    DeviceError,
    assign_gpus,
    assignment_line,
    describe_device,
    run_with_environment,
    visible_gpus,
    worker_environments,
)

FOUR = ["0", "1", "2", "3"]


def test_the_visible_gpus_come_from_cuda_visible_devices_else_from_torch():
    assert visible_gpus({VISIBLE: "2,3"}, count=lambda: 8) == ["2", "3"]
    assert visible_gpus({VISIBLE: " GPU-a1b2 , MIG-c3 "}) == ["GPU-a1b2", "MIG-c3"]
    assert visible_gpus({VISIBLE: ""}, count=lambda: 8) == []  # set but empty: no GPU
    assert visible_gpus({VISIBLE: "1,-1,2"}) == ["1"]  # CUDA stops at the first invalid entry
    assert visible_gpus({}, count=lambda: 3) == ["0", "1", "2"]
    assert visible_gpus({}, count=lambda: 0) == []


def test_each_worker_gets_its_own_gpus():
    assert assign_gpus(4, FOUR) == [("0",), ("1",), ("2",), ("3",)]  # default: one each
    assert assign_gpus(2, FOUR) == [("0",), ("1",)]
    assert assign_gpus(2, FOUR, per_worker=2) == [("0", "1"), ("2", "3")]
    assert assign_gpus(3, ["5", "7", "9"], per_worker=1) == [("5",), ("7",), ("9",)]


def test_shared_gpus_go_round_robin_with_no_more_workers_per_gpu_than_asked():
    assert assign_gpus(4, ["0", "1"], per_worker=0.5) == [("0",), ("1",), ("0",), ("1",)]
    assert assign_gpus(3, ["0", "1"], per_worker=0.5) == [("0",), ("1",), ("0",)]
    shared = assign_gpus(8, ["0", "1"], per_worker=0.25)
    assert max(shared.count((gpu,)) for gpu in ("0", "1")) == 4
    assert assign_gpus(3, ["0"], per_worker=1 / 3) == [("0",)] * 3


@pytest.mark.parametrize(
    ("workers", "gpus", "per_worker", "message"),
    [
        (3, ["0", "1"], None, "--workers 3 at --gpus-per-worker 1 needs 3 GPU(s), and 2 are"),
        (2, ["0", "1", "2"], 2, "--workers 2 at --gpus-per-worker 2 needs 4 GPU(s), and 3 are"),
        (5, ["0", "1"], 0.5, "--workers 5 at --gpus-per-worker 0.5 needs 3 GPU(s)"),
        (2, ["0", "1"], 1.5, "--gpus-per-worker must be 0, a whole number or a share 1/m"),
        (2, ["0", "1"], 0.4, "--gpus-per-worker must be 0, a whole number or a share 1/m"),
        (2, ["0", "1"], -1, "--gpus-per-worker must be 0, a whole number or a share 1/m"),
    ],
)
def test_workers_that_do_not_fit_are_refused_saying_what_to_change(
    workers: int, gpus: list[str], per_worker: float | None, message: str
):
    with pytest.raises(DeviceError) as error:
        assign_gpus(workers, gpus, per_worker)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_cpu_only_machines_and_zero_gpus_per_worker():
    assert worker_environments(3, gpus=[]) == [{}, {}, {}]  # nothing changes
    assert worker_environments(3, per_worker=5, gpus=[]) == [{}, {}, {}]
    assert worker_environments(2, per_worker=0, gpus=FOUR) == [{VISIBLE: ""}, {VISIBLE: ""}]
    assert worker_environments(2, gpus=["4", "6"]) == [{VISIBLE: "4"}, {VISIBLE: "6"}]
    assert worker_environments(1, per_worker=2, gpus=FOUR) == [{VISIBLE: "0,1"}]


def test_the_sweep_log_says_which_worker_has_which_gpus():
    assert assignment_line([{}, {}]) is None
    two = worker_environments(2, per_worker=2, gpus=FOUR)
    assert assignment_line(two) == "worker 0: GPU 0,1; worker 1: GPU 2,3"
    assert assignment_line([{VISIBLE: ""}]) == "worker 0: no GPU (CPU)"


def _report_visible() -> str:
    return os.environ.get(VISIBLE, "<unset>")


def test_a_spawned_worker_starts_with_its_environment():
    """What study.py's workers run: the variable is set in the child before the target."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        seen = pool.apply(run_with_environment, ({VISIBLE: "3"}, _report_visible))
    assert seen == "3"


def test_a_trial_names_the_gpu_it_trained_on():
    def name(index: int) -> str:
        return f"Fake GPU {index}"

    assert describe_device("cpu") == "cpu"
    assert describe_device("cuda:0", {VISIBLE: "3"}, name) == "cuda:0 = GPU 3 (Fake GPU 0)"
    assert describe_device("cuda:1", {VISIBLE: "2,5"}, name) == "cuda:1 = GPU 5 (Fake GPU 1)"
    assert describe_device("cuda:1", {}, name) == "cuda:1 = GPU 1 (Fake GPU 1)"
    assert describe_device("cuda", {VISIBLE: "GPU-a1"}, name) == "cuda:0 = GPU GPU-a1 (Fake GPU 0)"
