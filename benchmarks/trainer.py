"""Speed of the exact-ELBO trainer on MNIST, measured side by side in one run.

Reports, for a sweep of 16 betas on the shipped MNIST (d = 784, k = 32, fixed sigma2, float64):

* time per step per configuration of the vmapped sweep (compilation excluded, reported apart);
* the FLOPs of one exact-ELBO step counted from the shapes of its matrix products, the achieved
  FLOP/s, and a float64 matrix product of the step's dominant shape measured in the same run
  (``(16 k) x d`` times ``d x d``): the achievable rate on this machine;
* the ratio of the vmapped sweep to a Python loop over the same jitted single-configuration
  trainer;
* the same sweep in the eigenbasis of S (an algorithmic change: O(d k^2) per step), as a
  wall-time ratio.

The sweep's time is that of its steps alone (``SweepResult.step_seconds``): ``train_sweep`` also
runs the convergence test once after the last step, a fixed cost per sweep, reported apart.
Timings are medians of ``--repeats`` runs; the machines are shared and noisy, so read the ratios.

    python benchmarks/trainer.py [--steps 200] [--repeats 3] [--out benchmarks/trainer.json]
    python benchmarks/trainer.py --check   # exit 1 when an in-run ratio misses its bound (CHECKS)
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import linear_vae  # noqa: F401  (float64)
from linear_vae.core.io import atomic_write_json
from linear_vae.data.datasets import load_mnist
from linear_vae.data.moments import compute_moments, eigen_decomposition
from linear_vae.data.problem import Problem
from linear_vae.training.sweep import train_single, train_sweep
from linear_vae.training.train import TrainConfig, TrainData


def step_flops(d: int, k: int) -> int:
    """FLOPs of one exact-ELBO gradient step from the shapes of its matrix products.

    Forward: ``P = V S`` (2 k d^2), ``P V^T`` and ``W^T W`` (2 d k^2 each), ``W (V delta)`` and
    ``V delta`` (2 d k each).  Backward: the cotangent of ``P = V S`` needs ``dP S`` (2 k d^2);
    ``P V^T`` and ``W^T W`` need two products each (8 d k^2).  Elementwise work is O(d k) and
    left out.  Total ``4 k d^2 + 12 d k^2 + 4 d k``.
    """
    return 4 * k * d * d + 12 * d * k * k + 4 * d * k


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_rate(m: int, d: int, dtype, repeats: int) -> float:
    """FLOP/s of an ``(m x d) @ (d x d)`` product in ``dtype`` (jitted, warm)."""
    a = jnp.asarray(np.random.default_rng(0).normal(size=(m, d)), dtype=dtype)
    b = jnp.asarray(np.random.default_rng(1).normal(size=(d, d)), dtype=dtype)
    f = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(f(a, b))
    inner = 20
    seconds = median_time(lambda: [f(a, b) for _ in range(inner)][-1], repeats) / inner
    return 2 * m * d * d / seconds


#: The in-run ratios ``--check`` guards (docs/performance.md; each measured in one process).
CHECKS = (
    # (name, the measured ratio, the bound, "max" or "min")
    ("vmapped sweep step / Python-loop step (per configuration)", "sweep_over_loop_step_ratio", 1.25, "max"),
    ("data-basis step / eigenbasis step", "data_over_eigen_basis_ratio", 1.5, "min"),
    ("data-basis step's FLOP rate / float64 matmul rate", "fraction_of_float64_matmul", 0.5, "min"),
)
#: Attempts of ``--check`` before it fails (a loaded machine can slow one part of a run more than another).
CHECK_ATTEMPTS = 3


def measure(steps: int, repeats: int, k: int, c: int) -> dict:
    """Every timing of the module docstring, in this process, as a JSON-ready dict."""
    dataset = load_mnist()
    moments = compute_moments(dataset.X)
    spectrum = eigen_decomposition(moments.cov)
    problem = Problem(dataset, moments.mean, moments.cov, spectrum)
    d = dataset.d
    sigma2 = 0.1
    betas = np.geomspace(0.5, 2 * spectrum.eigenvalues[0] / sigma2, c)
    sigma2s, seeds = np.full(c, sigma2), np.zeros(c, int)
    # Adam by name (Newton is the default optimiser), no convergence checks between chunks.
    config = TrainConfig(latent_dim=k, steps=steps, log_every=steps, optimizer="adam", stop_when_converged=False)
    results = {"device": str(jax.devices()[0]), "d": d, "k": k, "configs": c, "steps": steps, "repeats": repeats}

    for basis in ("data", "eigen"):
        data = TrainData.build(problem, basis)
        cfg = config._replace(basis=basis)
        # The first call compiles before its clock starts, so its steps are timed warm like the rest.
        runs = [train_sweep(data, cfg, betas, sigma2s, seeds) for _ in range(repeats)]
        step_seconds = statistics.median(r.step_seconds for r in runs)
        results[f"sweep_{basis}"] = {
            "compile_seconds": runs[0].compile_seconds,
            # The steps alone: train_sweep also runs the convergence test once after the last
            # step, a cost per sweep, not per step (reported apart).
            "seconds": step_seconds,
            "seconds_per_step_per_config": step_seconds / (steps * c),
            "end_check_seconds": statistics.median(r.check_seconds for r in runs),
        }

    data = TrainData.build(problem, "data")
    jax.block_until_ready(train_single(data, config, betas[0], sigma2, 0))  # compile once
    loop_seconds = median_time(lambda: [train_single(data, config, b, sigma2, 0)[1].elbo for b in betas][-1], repeats)
    results["python_loop_data"] = {"seconds": loop_seconds, "seconds_per_step_per_config": loop_seconds / (steps * c)}

    flops = step_flops(d, k)
    per_step = results["sweep_data"]["seconds_per_step_per_config"]
    rate64 = matmul_rate(c * k, d, jnp.float64, repeats)
    rate32 = matmul_rate(c * k, d, jnp.float32, repeats)
    results.update(
        {
            "flops_per_step": flops,
            "achieved_flops_per_second": flops / per_step,
            "matmul_float64_flops_per_second": rate64,
            "matmul_float32_flops_per_second": rate32,
            "fraction_of_float64_matmul": flops / per_step / rate64,
            "loop_over_sweep_ratio": loop_seconds / results["sweep_data"]["seconds"],
            "sweep_over_loop_step_ratio": results["sweep_data"]["seconds"] / loop_seconds,
            "data_over_eigen_basis_ratio": results["sweep_data"]["seconds"] / results["sweep_eigen"]["seconds"],
        }
    )
    return results


def failed_checks(results: dict) -> list[str]:
    """One line per ratio of :data:`CHECKS` that misses its bound."""
    failures = []
    for name, key, bound, kind in CHECKS:
        value = results[key]
        if (kind == "max" and value > bound) or (kind == "min" and value < bound):
            failures.append(f"{name} = {value:.2f}, {'above' if kind == 'max' else 'below'} the bound {bound}")
    return failures


def print_results(results: dict) -> None:
    per_step = results["sweep_data"]["seconds_per_step_per_config"]
    print(
        f"MNIST d = {results['d']}, k = {results['k']}, {results['configs']} betas, {results['steps']} steps, "
        f"median of {results['repeats']} ({results['device']})"
    )
    print(
        f"  vmapped sweep (data basis):  {per_step * 1e6:9.1f} us per step per configuration "
        f"(compile {results['sweep_data']['compile_seconds']:.2f} s; "
        f"convergence test after the last step {results['sweep_data']['end_check_seconds']:.2f} s)"
    )
    print(
        f"  Python loop of jitted runs:  {results['python_loop_data']['seconds_per_step_per_config'] * 1e6:9.1f} us "
        f"-> sweep / loop = {results['sweep_over_loop_step_ratio']:.2f}"
    )
    print(
        f"  eigenbasis sweep:            {results['sweep_eigen']['seconds_per_step_per_config'] * 1e6:9.1f} us "
        f"-> data / eigen = {results['data_over_eigen_basis_ratio']:.2f}"
    )
    print(
        f"  one step: {results['flops_per_step'] / 1e6:.1f} MFLOP, achieved "
        f"{results['achieved_flops_per_second'] / 1e9:.2f} GFLOP/s; float64 matmul "
        f"{results['matmul_float64_flops_per_second'] / 1e9:.2f} GFLOP/s "
        f"(float32 {results['matmul_float32_flops_per_second'] / 1e9:.2f}) "
        f"-> {100 * results['fraction_of_float64_matmul']:.0f}% of the float64 matmul rate"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--configs", type=int, default=16)
    parser.add_argument(
        "--out", default=None, help="JSON to write (default benchmarks/trainer.json; nothing with --check)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"exit 1 unless every in-run ratio meets its bound ({CHECK_ATTEMPTS} attempts before failing)",
    )
    args = parser.parse_args()
    out = args.out or (None if args.check else "benchmarks/trainer.json")
    for attempt in range(1, (CHECK_ATTEMPTS if args.check else 1) + 1):
        results = measure(args.steps, args.repeats, args.latent_dim, args.configs)
        print_results(results)
        failures = failed_checks(results)
        if not args.check or not failures:
            break
        print(f"attempt {attempt} of {CHECK_ATTEMPTS} missed: " + "; ".join(failures), flush=True)
    if out:
        atomic_write_json(out, {**results, "checks_failed": failures})
    if args.check:
        if failures:
            print(f"speed check FAILED after {CHECK_ATTEMPTS} attempts: " + "; ".join(failures))
            raise SystemExit(1)
        print("speed check passed: " + "; ".join(f"{name} within {bound}" for name, _, bound, _ in CHECKS))


if __name__ == "__main__":
    main()
