"""The one training loop, shared by the linear trainer (:mod:`linear_vae.train`) and the deep VAE
(:mod:`linear_vae.deep`); it knows nothing of either model.

A run is a sequence of *records*: ``steps_per_record[r]`` optimiser steps, then a measurement.
The model supplies two functions, already ``jit(vmap(...))``-ed over a leading configuration axis:

* ``init(*args) -> (state, first_record)``: the state before the first step and its measurement;
* ``run(state, *args, steps) -> (state, history)``: ``lax.scan`` over the records of one chunk,
  ``steps`` being that chunk's slice of ``steps_per_record`` (an array, so chunks of equal length
  share one compiled program whatever the number of steps in each record).

:func:`run_in_chunks` compiles ``run`` once (timed apart from training), calls it chunk after
chunk, reports progress between chunks and hands each chunk to the model's ``between`` hook,
which checks divergence and convergence, may update the state (freeze converged
configurations) and decides whether to stop.  :func:`shard_configurations` spreads the
configuration axis over several devices when there are several.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def record_steps(steps: int, log_every: int) -> np.ndarray:
    """Optimiser steps before each record: ``log_every`` each, the last one whatever remains, so that
    the last record is always taken after the final step."""
    n_records = -(-steps // log_every)
    out = np.full(n_records, log_every, dtype=np.int32)
    out[-1] = steps - (n_records - 1) * log_every
    return out


def records_per_chunk(n_records: int, target_chunks: int) -> int:
    """Records per chunk: the divisor of ``n_records`` nearest ``n_records / target_chunks`` (equal
    chunks reuse one compiled function)."""
    goal = max(1, n_records // max(target_chunks, 1))
    divisors = [c for c in range(1, n_records + 1) if n_records % c == 0]
    return min(divisors, key=lambda c: abs(c - goal))


def announce(progress, phase: str) -> None:
    """Tell a :class:`linear_vae.progress.Progress` (anything with ``phase``) which stage begins."""
    if progress is not None and hasattr(progress, "phase"):
        progress.phase(phase)


def shard_configurations(tree, n_configs: int):
    """``(tree, sharding)``: ``tree`` (leading configuration axis) padded by repeating its last entry
    to a multiple of the device count and sharded across the devices, or unchanged with ``None``
    on one device."""
    devices = jax.devices()
    if len(devices) < 2 or n_configs < 2:
        return tree, None
    padded = math.ceil(n_configs / len(devices)) * len(devices)
    if padded != n_configs:
        tree = jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], padded - n_configs)]), tree)
    sharding = NamedSharding(Mesh(np.array(devices), ("config",)), PartitionSpec("config"))
    return jax.device_put(tree, sharding), sharding


@jax.jit
def _concatenate(parts):
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=1), *parts)


class Chunk(NamedTuple):
    """What the ``between`` hook sees after a chunk."""

    state: Any
    first_record: Any  # the measurement before the first step
    history: Any  # this chunk's records (device arrays; leading axes: configuration, record)
    steps_done: int  # optimiser steps so far, this chunk included
    last: bool  # no chunk follows (the hook must then make its final checks)


class LoopResult(NamedTuple):
    state: Any
    first_record: Any
    history: Any  # every record made (fewer than planned when the hook stopped early)
    steps_done: int
    seconds: float  # training wall time, compilation excluded
    compile_seconds: float
    hook_seconds: float  # the part of ``seconds`` spent in the ``between`` hook (its checks)


def run_in_chunks(
    init: Callable,
    run: Callable,
    args: tuple,
    steps_per_record: np.ndarray,
    chunk: int,
    between: Callable[[Chunk], tuple[Any, bool, float]] | None = None,
    progress=None,
    sharded: bool = False,
) -> LoopResult:
    """Run ``init`` then ``run`` chunk by chunk (see the module docstring).

    ``between(Chunk)`` returns ``(state, stop, compile_seconds)``: the state to continue from,
    whether to stop now, and the seconds it spent compiling (its checks are compiled lazily, on
    the state as the run leaves it; that time counts as compilation, not training).  The rest of
    the hook's time counts as training and is also reported apart (``hook_seconds``), so that
    ``seconds - hook_seconds`` is the cost of the steps alone, whatever the hook checks.
    ``progress(steps_done, steps_total)`` is called after each chunk.  ``sharded``: the state is
    spread over devices (:func:`shard_configurations`) and is put back into the layout the chunk
    program was compiled for after the hook.
    """
    announce(progress, "compiling")
    start = time.perf_counter()
    state, first_record = init(*args)
    total_records, total_steps = len(steps_per_record), int(np.sum(steps_per_record))
    chunk_steps = [jnp.asarray(steps_per_record[r : r + chunk]) for r in range(0, total_records, chunk)]
    compiled = run.lower(state, *args, chunk_steps[0]).compile()
    compile_seconds = time.perf_counter() - start
    layout = jax.tree.map(lambda a: a.sharding, state) if sharded else None

    announce(progress, "training")
    start = time.perf_counter()
    histories, steps_done, hook_seconds = [], 0, 0.0
    for index, steps in enumerate(chunk_steps):
        state, history = compiled(state, *args, steps)
        histories.append(history)
        steps_done += int(np.sum(steps_per_record[index * chunk : (index + 1) * chunk]))
        if between is not None:
            # The hook reads the chunk's results anyway; waiting for them first lets its own time
            # (convergence and divergence checks) be told apart from the steps'.
            jax.block_until_ready((state, history))
            hook_start = time.perf_counter()
            state, stop, compiling = between(
                Chunk(state, first_record, history, steps_done, index == len(chunk_steps) - 1)
            )
            compile_seconds += compiling
            hook_seconds += time.perf_counter() - hook_start - compiling
            start += compiling
        else:
            stop = False
        if layout is not None:
            state = jax.device_put(state, layout)
        if progress:
            progress(steps_done, total_steps)
        if stop:
            break
    history = _concatenate(histories) if len(histories) > 1 else histories[0]
    jax.block_until_ready(history)
    seconds = time.perf_counter() - start
    if progress is not None and hasattr(progress, "converged") and steps_done < total_steps:
        progress.converged(steps_done)
    return LoopResult(state, first_record, history, steps_done, seconds, compile_seconds, hook_seconds)
