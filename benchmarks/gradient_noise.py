"""Why Hydranet learns more slowly per step: the signal-to-noise ratio of its gradient.

For one set of weights (fresh, or a checkpoint's), draws many training batches of each method
from the real data module and computes the gradient of the loss on each. With g_b the gradient
of batch b and ḡ their mean:

* signal = ||ḡ||², noise = mean_b ||g_b − ḡ||², SNR = signal / noise, for one step's batch;
* ``cos(ḡ, ḡ_baseline)``: whether a method's expected step points where the baseline's does.

The set loss gives every member the residual of the whole set, (Σ_j r_j) ∇f(x_i): its own error
plus the K − 1 others', which average out over many steps but add noise to each. Prints a
markdown table::

    python benchmarks/gradient_noise.py --csv data/blobs/dataset.csv --batches 64
"""

from __future__ import annotations

import argparse

import torch

from hydralab.data.datamodule import HydraDataModule
from hydralab.training.module import HydraModule


def batch_gradients(module: HydraModule, data: HydraDataModule, batches: int) -> torch.Tensor:
    """One flattened gradient per training batch, (batches, n_params), over as many epochs."""
    gradients = []
    epoch = 0
    while len(gradients) < batches:
        loader = data.train_dataloader()
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            module.zero_grad()
            prediction, _ = module.model.forward_sets(batch["images"], batch["zero"])
            module.loss_fn(prediction, batch["set_label"].float() / module.label_scale).backward()
            gradients.append(torch.cat([p.grad.flatten() for p in module.parameters()]))
            if len(gradients) == batches:
                break
        epoch += 1
    return torch.stack(gradients)


def measure(args: argparse.Namespace) -> list[dict[str, float | str]]:
    settings = [("baseline", 1, 0.0), *[("hydranet", k, args.p) for k in args.k]]
    state = None
    rows, baseline_mean = [], None
    for method, k, p in settings:
        torch.manual_seed(args.seed)
        data = HydraDataModule(
            csv=args.csv,
            method=method,
            k=k,
            p=p,
            batch_size=4 * k if k > 4 else 4,
            n_train=args.n_train,
            normalization="percentile",
            seed=args.seed,
        )
        data.setup("fit")
        module = HydraModule(method=method, k=k, p=p, zero_mode="skip")
        labels = torch.tensor([s.record.label for s in data.scans["train"]])
        module.label_scale.fill_(float(labels.abs().mean()))
        if args.checkpoint:
            weights = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
            module.model.load_state_dict(
                {
                    k[len("model.") :]: v
                    for k, v in weights["state_dict"].items()
                    if k.startswith("model.")
                }
            )
        # The same weights for every method: the first module's, copied.
        if state is None:
            state = {k: v.clone() for k, v in module.model.state_dict().items()}
        module.model.load_state_dict(state)
        g = batch_gradients(module, data, args.batches)
        mean = g.mean(0)
        signal = float(mean.square().sum())
        noise = float((g - mean).square().sum(1).mean())
        # Adam scales each weight by its own gradient's RMS: what moves a weight is its own SNR,
        # so report the median over weights too (a few large gradients dominate the total).
        variance = (g - mean).square().mean(0)
        alive = g.abs().amax(0) > 0  # weights behind dead ReLUs get no gradient at all
        per_weight = mean[alive].square() / variance[alive].clamp_min(1e-30)
        baseline_mean = mean if baseline_mean is None else baseline_mean
        cosine = float(torch.nn.functional.cosine_similarity(mean, baseline_mean, dim=0))
        rows.append(
            {
                "method": method,
                "K": k,
                "p": p,
                "signal": signal,
                "noise": noise,
                "SNR": signal / noise,
                "median SNR": float(per_weight.median()),
                "dead": float(1 - alive.float().mean()),
                "cos": cosine,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv", default="data/blobs/dataset.csv")
    parser.add_argument("--n-train", type=int, default=20)
    parser.add_argument("--k", type=int, nargs="+", default=[4])
    parser.add_argument("--p", type=float, default=0.1)
    parser.add_argument("--batches", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", help="a fit's checkpoint; default: fresh weights")
    args = parser.parse_args()
    rows = measure(args)
    print(
        "| method | K | p | signal ‖ḡ‖² | noise E‖g−ḡ‖² | SNR | median per-weight SNR "
        "| weights without gradient | cos(ḡ, ḡ_baseline) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['K']} | {r['p']} | {r['signal']:.3g} | {r['noise']:.3g} "
            f"| {r['SNR']:.3f} | {r['median SNR']:.2e} | {r['dead']:.0%} "
            f"| {r['cos']:.2f} |"
        )


if __name__ == "__main__":
    main()
