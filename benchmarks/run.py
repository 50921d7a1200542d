"""Every speed comparison of the exact-ELBO trainer in one process, on the same data and machine.

Run from the repository root, as a module of the ``benchmarks`` package:

    python -m benchmarks.run [--quick]      # writes benchmarks/results.json and benchmarks/results.md
    python -m benchmarks.run --report-only  # rewrites benchmarks/results.md from benchmarks/results.json

What is measured and how: :mod:`benchmarks.measure`; the PyTorch baselines:
:mod:`benchmarks.baselines`; times to accuracy from the recorded gaps: :mod:`benchmarks.bookkeeping`;
ratios, targets, notes and the markdown: :mod:`benchmarks.report`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import measure, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer configs, steps and budgets")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"Adam steps of every method's schedule (default {measure.FULL_STEPS}; 2000 with --quick)",
    )
    parser.add_argument("--out", default="benchmarks/results.json")
    parser.add_argument("--md", default="benchmarks/results.md")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="recompute ratios and rewrite the markdown from an existing --out JSON",
    )
    parser.add_argument(
        "--scaling-point",
        nargs=4,
        type=int,
        metavar=("D", "K", "CONFIGS", "REPEATS"),
        help="measure one point of section 3 and print its JSON (the full run calls this in a fresh process per point)",
    )
    args = parser.parse_args()
    if args.scaling_point:
        print(json.dumps(measure.step_cost(*args.scaling_point)))
        return
    if args.report_only:
        report.write_report(json.loads(Path(args.out).read_text()), args.out, args.md)
        return
    res = measure.run_all(args.quick, args.steps, partial=args.out + ".partial")
    report.write_report(res, args.out, args.md)
    print(f"total {res['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
