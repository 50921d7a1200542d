"""Time and memory of ``linear-vae analyze`` against the number of features d, at N = 2000.

For each d in ``--ds`` (default 1e3, 3e3, 1e4, 3e4, 1e5) on low-rank-plus-noise data (rank 10,
unit noise, nonzero mean), with ``K = --latent-dim`` (default 10) and learned sigma2:

* ``seconds``: wall time of :func:`linear_vae.analysis.analyze` in-process (the CLI's code path
  after loading; best of ``--repeats``), with the solver it picks (``"top"``, the N x N Gram
  matrix, iff d > N; else the d x d ``"full"`` one), split into ``validate_data``, the
  eigen-decomposition (:func:`~linear_vae.data.moments.top_eigenpairs` or
  :func:`~linear_vae.data.moments.compute_moments` + :func:`~linear_vae.data.moments.eigen_decomposition`)
  and the rest (the closed form);
* ``peak_alloc_mib``: tracemalloc's peak of the numpy allocations ``analyze`` makes (beyond the
  data ``X``, which the caller holds), from a second run with tracing on;
* the fitted exponent ``p`` of ``seconds ~ d^p`` (least squares in log-log) over all d and over
  the ``"top"`` sizes;
* once, at the largest d, ``linear-vae analyze --data X.npy --latent-dim K --json`` in a
  subprocess: end-to-end wall time (interpreter start, imports, ``np.load`` included) and the
  child's peak resident memory (``ru_maxrss``).

The machine is shared: the 1-minute load average is recorded before and after every
measurement; compare timings only within one run.  BLAS threads are whatever the environment
gives (``OPENBLAS_NUM_THREADS``; the default is one per core).

    python benchmarks/analyze_scale.py [--ds 1000,3000,10000,30000,100000] [--n 2000]
        [--latent-dim 10] [--repeats 1] [--out benchmarks/analyze_scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from linear_vae.analysis import analyze
from linear_vae.core.io import atomic_write_json
from linear_vae.data.datasets import validate_data
from linear_vae.data.moments import compute_moments, eigen_decomposition, top_eigenpairs

RANK = 10


def make_data(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Rank-10 signal (strengths 10 down to 3, in units of the noise) plus unit noise, mean 1."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, RANK)) * np.linspace(10.0, 3.0, RANK)
    X = rng.standard_normal((n, d))
    X += Z @ rng.standard_normal((RANK, d))
    X += 1.0
    return X


def load() -> float:
    return round(os.getloadavg()[0], 2)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def measure(X: np.ndarray, k: int, repeats: int) -> dict:
    n, d = X.shape
    solver = "top" if d > n else "full"
    best = None
    for _ in range(repeats):
        load_before = load()
        _, t_validate = timed(lambda: validate_data(X))
        if solver == "top":
            _, t_eigen = timed(lambda: top_eigenpairs(X, k + 1))
        else:
            _, t_eigen = timed(lambda: eigen_decomposition(compute_moments(X).cov))
        report, t_total = timed(lambda: analyze(X, k).to_dict())
        row = {
            "seconds": t_total,
            "validate_seconds": t_validate,
            "eigen_seconds": t_eigen,
            "load_before": load_before,
            "load_after": load(),
        }
        if best is None or row["seconds"] < best["seconds"]:
            best = row
    tracemalloc.start()
    try:
        analyze(X, k)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {
        "d": d,
        "n": n,
        "solver": solver,
        **best,
        "peak_alloc_mib": peak / 2**20,
        "data_mib": X.nbytes / 2**20,
        "dxd_mib": d * d * 8 / 2**20,
        "sigma2": report["sigma2"],
        "eigenvalues": report["eigenvalues"],
    }


def fit_exponent(rows: list[dict]) -> float | None:
    if len(rows) < 2:
        return None
    slope, _ = np.polyfit(np.log([r["d"] for r in rows]), np.log([r["seconds"] for r in rows]), 1)
    return float(slope)


def cli_run(X: np.ndarray, k: int) -> dict:
    """``linear-vae analyze`` on ``X`` saved as .npy, in a fresh interpreter."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.npy"
        np.save(path, X)
        command = [
            sys.executable,
            "-m",
            "linear_vae.cli",
            "analyze",
            "--data",
            str(path),
            "--latent-dim",
            str(k),
            "--json",
        ]
        load_before = load()
        start = time.perf_counter()
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - start
    maxrss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB
    report = json.loads(out.stdout)
    return {
        "d": X.shape[1],
        "n": X.shape[0],
        "seconds": seconds,
        "maxrss_mib": maxrss_kib / 1024,
        "data_mib": X.nbytes / 2**20,
        "load_before": load_before,
        "load_after": load(),
        "sigma2": report["sigma2"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ds", default="1000,3000,10000,30000,100000")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end CLI run")
    parser.add_argument("--out", default="benchmarks/analyze_scale.json")
    args = parser.parse_args()
    ds = [int(float(v)) for v in args.ds.split(",")]
    k = args.latent_dim

    rows = []
    for d in ds:
        X = make_data(args.n, d)
        rows.append(measure(X, k, args.repeats))
        r = rows[-1]
        print(
            f"d = {d:>6}: {r['seconds']:7.2f} s ({r['solver']}), peak {r['peak_alloc_mib']:8.1f} MiB, "
            f"load {r['load_before']} -> {r['load_after']}",
            flush=True,
        )
        del X
    cli = None
    if not args.no_cli:
        X = make_data(args.n, ds[-1])
        cli = cli_run(X, k)
        del X
        print(f"CLI at d = {cli['d']}: {cli['seconds']:.2f} s, max RSS {cli['maxrss_mib']:.0f} MiB", flush=True)

    top_rows = [r for r in rows if r["solver"] == "top"]
    results = {
        "n": args.n,
        "latent_dim": k,
        "rank": RANK,
        "repeats": args.repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        },
        "rows": rows,
        "exponent_all": fit_exponent(rows),
        "exponent_top": fit_exponent(top_rows),
        "cli": cli,
    }
    atomic_write_json(args.out, results)

    print()
    print(
        f"N = {args.n}, K = {k}, learned sigma2; best of {args.repeats}; load = 1-min load average "
        f"({os.cpu_count()} CPUs)"
    )
    print()
    print("| d | solver | analyze (s) | validate (s) | eigen (s) | peak alloc (MiB) | X (MiB) | d x d S (MiB) | load |")
    print("|---:|:---|---:|---:|---:|---:|---:|---:|:---|")
    for r in rows:
        print(
            f"| {r['d']:,} | {r['solver']} | {r['seconds']:.2f} | {r['validate_seconds']:.2f} | "
            f"{r['eigen_seconds']:.2f} | {r['peak_alloc_mib']:.1f} | {r['data_mib']:.0f} | {r['dxd_mib']:.0f} | "
            f"{r['load_before']} -> {r['load_after']} |"
        )
    print()
    print(
        f"fitted exponent of time in d: {results['exponent_all']:.2f} (all d), "
        f"{results['exponent_top']:.2f} (top solver, d > N)"
        if results["exponent_top"] is not None
        else f"fitted exponent of time in d: {results['exponent_all']}"
    )
    if cli is not None:
        print(
            f"end-to-end `linear-vae analyze` at d = {cli['d']:,}: {cli['seconds']:.2f} s, "
            f"max RSS {cli['maxrss_mib']:.0f} MiB (X is {cli['data_mib']:.0f} MiB), "
            f"load {cli['load_before']} -> {cli['load_after']}"
        )


if __name__ == "__main__":
    main()
