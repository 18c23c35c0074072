"""Print the calibration table of the report's statistics (docs/method.md, "Calibration").

Simulates baseline-vs-Hydranet comparisons (:mod:`hydralab.reports.calibration`) at n = 50 and
300 test scans and true ICCs 0.2, 0.5 and 0.9, and prints, per scenario, how often each test
rejects at 5 % (the size where ``effect`` is 1, the power otherwise) and how often each interval
covers the truth. ``williams_icc`` and ``scan_only`` are the statistics the report used before::

    python benchmarks/calibration.py --sims 2000          # about an hour on 2 CPU cores
    python benchmarks/calibration.py --sims 200 --quick   # one scenario of each kind
    python benchmarks/calibration.py --kind seeds --n 300 --seeds 5   # one slice of the table
"""

from __future__ import annotations

import argparse
import time

from hydralab.reports import calibration

COLUMNS = {
    "pair": ("williams_pearson", "williams_icc", "permutation", "scan_ci_coverage"),
    "seeds": (
        "seed_aware_coverage",
        "seed_aware_rejects",
        "scan_only_coverage",
        "scan_only_rejects",
    ),
}
SETTING = ("n", "icc", "seeds", "seed_spread", "effect", "labels")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=2000, help="comparisons per scenario")
    parser.add_argument("--resamples", type=int, default=1000, help="permutations/bootstraps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the first scenario of each kind")
    parser.add_argument("--kind", choices=("pair", "seeds"), help="only this table")
    parser.add_argument("--n", type=int, nargs="*", help="only these test-set sizes")
    parser.add_argument("--seeds", type=int, nargs="*", help="only these numbers of seeds")
    args = parser.parse_args(argv)
    count = 1 if args.quick else None
    scenarios = tuple(
        tuple(
            s
            for s in table
            if (args.n is None or s.n in args.n) and (args.seeds is None or s.seeds in args.seeds)
        )[:count]
        if args.kind in (None, kind)
        else ()
        for kind, table in (
            ("pair", calibration.PAIR_SCENARIOS),
            ("seeds", calibration.SEED_SCENARIOS),
        )
    )
    kind = None
    started = time.perf_counter()
    for row in calibration.calibration_rows(args.sims, args.resamples, args.seed, *scenarios):
        if row["kind"] != kind:
            kind = str(row["kind"])
            names = [*SETTING, *COLUMNS[kind]]
            print(f"\n{kind}: {args.sims} simulated comparisons per row\n")
            print("| " + " | ".join(names) + " |")
            print("|" + "---|" * len(names))
        cells = [str(row[name]) for name in SETTING]
        cells += [f"{100 * row[name]:.1f} %" for name in COLUMNS[kind]]
        print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
