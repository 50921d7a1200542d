"""Cost of one configuration-step of the deep-VAE grid against the float32 matmul rate at the
network's own shapes, measured side by side in one process.

The deep-VAE study (``linear_vae.experiments.deep_vae``) trains a vmapped grid of MLP VAEs
([512, 256] ReLU encoder and mirrored decoder, K = 32, minibatches of 100, d = 784) record by
record.  This script times that record program (compilation apart) on the shipped MNIST
training images, and in the same process the float32 matrix products the step is made of: for
each layer ``(C, B, m) @ (C, m, n)`` batched over the ``C`` configurations as the grid runs them.
A step is forward plus backward, three products per layer (the forward one and the two of its
gradient), so its FLOPs are ``3 x 2 B sum(m n)`` over the layers of encoder and decoder
(element-wise work left out).  The ratio of the step's achieved FLOP rate to the matmul rate is
what the grid makes of this machine; the study needs it at 50% or more.

    python benchmarks/deep_step.py [--configs 16] [--steps 100] [--repeats 3] [--out benchmarks/deep_step.json]
    python benchmarks/deep_step.py --check   # exit 1 when the ratio is below 50% (three attempts)
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from linear_vae.core.io import atomic_write_json
from linear_vae.data.datasets import load_data, three_way_split
from linear_vae.deep.deep import DTYPE, DeepConfig, DeepHyper, batched_hyper, grid_programs

if __package__:  # python -m benchmarks.deep_step
    from .trainer import median_time
else:  # python benchmarks/deep_step.py
    from trainer import median_time

#: The bound of ``--check``: the step's FLOP rate over the matmul rate at its shapes.
MIN_RATIO = 0.5


def layer_shapes(config: DeepConfig, d: int) -> list[tuple[int, int]]:
    """``(fan_in, fan_out)`` of every layer of the encoder and the decoder."""
    k, hidden = config.latent_dim, list(config.hidden)
    encoder = [d, *hidden, 2 * k]
    decoder = [k, *hidden[::-1], d]
    return list(zip(encoder[:-1], encoder[1:])) + list(zip(decoder[:-1], decoder[1:]))


def step_flops(config: DeepConfig, d: int) -> int:
    """FLOPs of one training step of one configuration: 3 products of ``2 B m n`` per layer."""
    return sum(3 * 2 * config.batch_size * m * n for m, n in layer_shapes(config, d))


def matmul_rate(config: DeepConfig, d: int, n_configs: int, repeats: int) -> float:
    """FLOP/s of the forward products of every layer, batched over the configurations, float32."""
    key = jax.random.key(0)
    shapes = layer_shapes(config, d)
    xs = [jax.random.normal(key, (n_configs, config.batch_size, m), DTYPE) for m, _ in shapes]
    ws = [jax.random.normal(key, (n_configs, m, n), DTYPE) for m, n in shapes]
    products = jax.jit(lambda xs, ws: [jnp.einsum("cbm,cmn->cbn", x, w) for x, w in zip(xs, ws)])
    jax.block_until_ready(products(xs, ws))
    rounds = 20
    seconds = median_time(lambda: [products(xs, ws) for _ in range(rounds)][-1], repeats) / rounds
    return sum(2 * n_configs * config.batch_size * m * n for m, n in shapes) / seconds


def measure(n_configs: int, steps: int, repeats: int) -> dict:
    config = DeepConfig(latent_dim=32, hidden=(512, 256), log_every=steps, batch_size=100)
    splits = three_way_split(load_data("mnist"), 500, 500, seed=0)
    X_train = jnp.asarray(splits.train.X, DTYPE)
    X_validation = jnp.asarray(splits.validation.X, DTYPE)
    hyper = batched_hyper(
        config,
        DeepHyper(np.geomspace(1e-3, 10, n_configs), np.zeros(n_configs), np.zeros(n_configs), np.arange(n_configs)),
    )
    init, run = grid_programs(config)
    state, _ = init(hyper, X_train, X_validation)
    record = jnp.asarray([steps], jnp.int32)
    start = time.perf_counter()
    compiled = run.lower(state, hyper, X_train, X_validation, record).compile()
    compile_seconds = time.perf_counter() - start
    holder = {"state": compiled(state, hyper, X_train, X_validation, record)[0]}  # warm

    def one_record():
        holder["state"], history = compiled(holder["state"], hyper, X_train, X_validation, record)
        return history

    seconds = median_time(one_record, repeats)
    d = X_train.shape[1]
    per_step = seconds / (steps * n_configs)
    rate = matmul_rate(config, d, n_configs, repeats)
    flops = step_flops(config, d)
    return {
        "configurations": n_configs,
        "steps_per_record": steps,
        "network": {"hidden": list(config.hidden), "latent_dim": config.latent_dim, "batch_size": config.batch_size},
        "ms_per_configuration_step": 1e3 * per_step,
        "step_gflop": flops / 1e9,
        "step_flop_rate": flops / per_step,
        "matmul_flop_rate": rate,
        "ratio_to_matmul": flops / per_step / rate,
        "compile_seconds": compile_seconds,
        "device": jax.devices()[0].device_kind,
        "load_average_1min": os.getloadavg()[0],  # other work on the machine (the ratio is measured in-process)
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=16, help="grid size (default 16)")
    parser.add_argument("--steps", type=int, default=100, help="steps per timed record (default 100)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/deep_step.json")
    parser.add_argument("--check", action="store_true", help=f"exit 1 if the ratio is below {100 * MIN_RATIO:.0f}%%")
    args = parser.parse_args(argv)
    for attempt in range(3 if args.check else 1):
        result = measure(args.configs, args.steps, args.repeats)
        print(
            f"deep VAE step: {result['ms_per_configuration_step']:.2f} ms per configuration-step "
            f"({result['step_gflop']:.2f} GFLOP, {result['step_flop_rate'] / 1e9:.1f} GFLOP/s); float32 matmul at the "
            f"network's shapes {result['matmul_flop_rate'] / 1e9:.1f} GFLOP/s; ratio {result['ratio_to_matmul']:.0%}"
        )
        if not args.check:
            atomic_write_json(args.out, result)
            return 0
        if result["ratio_to_matmul"] >= MIN_RATIO:
            return 0
        print(f"attempt {attempt + 1}: below {MIN_RATIO:.0%}", flush=True)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
