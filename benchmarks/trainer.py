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

Timings are medians of ``--repeats`` runs; the machines are shared and noisy, so read the ratios.

    python benchmarks/trainer.py [--steps 200] [--repeats 5] [--out benchmarks/trainer.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import linear_vae  # noqa: F401  (float64)
from linear_vae.datasets import load_mnist
from linear_vae.io import atomic_write_json
from linear_vae.moments import compute_moments, eigen_decomposition
from linear_vae.problem import Problem
from linear_vae.train import TrainConfig, TrainData, train_single, train_sweep


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--configs", type=int, default=16)
    parser.add_argument("--out", default="benchmarks/trainer.json")
    args = parser.parse_args()

    dataset = load_mnist()
    moments = compute_moments(dataset.X)
    spectrum = eigen_decomposition(moments.cov)
    d, k, c = dataset.d, args.latent_dim, args.configs
    sigma2 = 0.1
    betas = np.geomspace(0.5, 2 * spectrum.eigenvalues[0] / sigma2, c)
    # Adam by name (Newton is the default optimiser), no convergence checks between chunks.
    config = TrainConfig(
        latent_dim=k, steps=args.steps, log_every=args.steps, optimizer="adam", stop_when_converged=False
    )
    results = {
        "device": str(jax.devices()[0]),
        "d": d,
        "k": k,
        "configs": c,
        "steps": args.steps,
        "repeats": args.repeats,
    }

    for basis in ("data", "eigen"):
        data = TrainData.build(Problem(dataset, moments.mean, moments.cov, spectrum), basis)
        cfg = config._replace(basis=basis)
        first = train_sweep(data, cfg, betas, np.full(c, sigma2), np.zeros(c, int))
        sweep_seconds = median_time(
            lambda: train_sweep(data, cfg, betas, np.full(c, sigma2), np.zeros(c, int)).history.elbo, args.repeats
        )
        results[f"sweep_{basis}"] = {
            "compile_seconds": first.compile_seconds,
            "seconds": sweep_seconds,
            "seconds_per_step_per_config": sweep_seconds / (args.steps * c),
        }

    data = TrainData.build(Problem(dataset, moments.mean, moments.cov, spectrum), "data")
    jax.block_until_ready(train_single(data, config, betas[0], sigma2, 0))  # compile once
    loop_seconds = median_time(
        lambda: [train_single(data, config, b, sigma2, 0)[1].elbo for b in betas][-1], args.repeats
    )
    results["python_loop_data"] = {
        "seconds": loop_seconds,
        "seconds_per_step_per_config": loop_seconds / (args.steps * c),
    }

    flops = step_flops(d, k)
    per_step = results["sweep_data"]["seconds_per_step_per_config"]
    rate64 = matmul_rate(c * k, d, jnp.float64, args.repeats)
    rate32 = matmul_rate(c * k, d, jnp.float32, args.repeats)
    results.update(
        {
            "flops_per_step": flops,
            "achieved_flops_per_second": flops / per_step,
            "matmul_float64_flops_per_second": rate64,
            "matmul_float32_flops_per_second": rate32,
            "fraction_of_float64_matmul": flops / per_step / rate64,
            "loop_over_sweep_ratio": loop_seconds / results["sweep_data"]["seconds"],
            "data_over_eigen_basis_ratio": results["sweep_data"]["seconds"] / results["sweep_eigen"]["seconds"],
        }
    )
    atomic_write_json(args.out, results)
    print(f"MNIST d = {d}, k = {k}, {c} betas, {args.steps} steps, median of {args.repeats} ({results['device']})")
    print(
        f"  vmapped sweep (data basis):  {per_step * 1e6:9.1f} us per step per configuration "
        f"(compile {results['sweep_data']['compile_seconds']:.2f} s)"
    )
    print(
        f"  Python loop of jitted runs:  {results['python_loop_data']['seconds_per_step_per_config'] * 1e6:9.1f} us "
        f"-> loop / sweep = {results['loop_over_sweep_ratio']:.2f}"
    )
    print(
        f"  eigenbasis sweep:            {results['sweep_eigen']['seconds_per_step_per_config'] * 1e6:9.1f} us "
        f"-> data / eigen = {results['data_over_eigen_basis_ratio']:.2f}"
    )
    print(
        f"  one step: {flops / 1e6:.1f} MFLOP, achieved {results['achieved_flops_per_second'] / 1e9:.2f} GFLOP/s; "
        f"float64 matmul {rate64 / 1e9:.2f} GFLOP/s (float32 {rate32 / 1e9:.2f}) "
        f"-> {100 * results['fraction_of_float64_matmul']:.0f}% of the float64 matmul rate"
    )


if __name__ == "__main__":
    main()
