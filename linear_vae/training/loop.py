"""The one training loop, shared by the linear trainer (:mod:`linear_vae.training.train`) and the deep VAE
(:mod:`linear_vae.deep.deep`); it knows nothing of either model.

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
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def record_steps(steps: int, log_every: int) -> np.ndarray:
    """Optimiser steps before each record: ``log_every`` each, the last one whatever remains, so that
    the last record is always taken after the final step.

    >>> record_steps(5, log_every=2)  # records after steps 2, 4 and 5
    array([2, 2, 1], dtype=int32)
    """
    n_records = -(-steps // log_every)
    out = np.full(n_records, log_every, dtype=np.int32)
    out[-1] = steps - (n_records - 1) * log_every
    return out


def records_per_chunk(n_records: int, target_chunks: int) -> int:
    """Records per chunk: the divisor of ``n_records`` nearest ``n_records / target_chunks`` (equal
    chunks reuse one compiled function).

    >>> records_per_chunk(12, target_chunks=5)  # 6 chunks of 2 records: equal chunks, one program
    2
    """
    goal = max(1, n_records // max(target_chunks, 1))
    divisors = [c for c in range(1, n_records + 1) if n_records % c == 0]
    return min(divisors, key=lambda c: abs(c - goal))


def announce(progress, phase: str) -> None:
    """Tell a :class:`linear_vae.core.progress.Progress` (anything with ``phase``) which stage begins.

    >>> import sys
    >>> from linear_vae.core.progress import Progress
    >>> announce(Progress(stream=sys.stdout, live=False), "compiling")
    compiling
    >>> announce(None, "compiling")  # no display: nothing
    """
    if progress is not None and hasattr(progress, "phase"):
        progress.phase(phase)


def shard_configurations(tree, n_configs: int):
    """``(tree, sharding)``: ``tree`` (leading configuration axis) padded by repeating its last entry
    to a multiple of the device count and sharded across the devices, or unchanged with ``None``
    on one device.

    >>> shard_configurations(jnp.arange(3.0), 3)  # on one device: unchanged, not sharded
    (Array([0., 1., 2.], dtype=float64), None)
    """
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

    >>> def init_one(rate):  # the state before the first step, and its record: x = 1
    ...     return jnp.ones(()), jnp.ones(())
    >>> def run_one(x, rate, steps):  # one record per entry of steps: steps[r] steps of x <- rate x, then x
    ...     def record(x, n):
    ...         x = jax.lax.fori_loop(0, n, lambda _, x: rate * x, x)
    ...         return x, x
    ...     return jax.lax.scan(record, x, steps)
    >>> init, run = jax.jit(jax.vmap(init_one)), jax.jit(jax.vmap(run_one, in_axes=(0, 0, None)))
    >>> result = run_in_chunks(init, run, (jnp.array([0.5, 2.0]),), record_steps(4, 2), chunk=1)
    >>> result.history, result.steps_done  # two configurations, a record every 2 steps, one record per chunk
    (Array([[ 0.25  ,  0.0625],
           [ 4.    , 16.    ]], dtype=float64), 4)
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


# --- runs that stop by a rule: finished configurations leave the grid ----------------------------
def padded_size(n_active: int, n_start: int) -> int:
    """The grid size that ``n_active`` running configurations are padded to: the starting size, or
    the smallest power of two or three times a power of two that holds them (so a grid shrinking
    from ``n_start`` compiles at most about ``2 log2(n_start)`` sizes, and at most a third of its
    lanes are padding).

    >>> [padded_size(n, 16) for n in (16, 13, 5, 3, 1)]
    [16, 16, 6, 3, 1]
    """
    sizes = sorted({n_start} | {m * 2**j for m in (1, 3) for j in range(n_start.bit_length()) if m * 2**j < n_start})
    return next(s for s in sizes if s >= n_active)


class StoppedGrid(NamedTuple):
    """What :func:`run_until_stopped` returns (host numpy throughout)."""

    first_record: Any  # the measurement before the first step (leading axis: configuration)
    histories: list  # per configuration, its records up to its stop (leading axis: record)
    kept: list  # per configuration, ``keep(state)`` when it stopped
    decisions: list  # per configuration, what ``decide`` returned when it stopped
    seconds: float  # training wall time of this process, compilation excluded
    compile_seconds: float
    configuration_steps: int  # optimiser steps of the configurations themselves, summed
    lane_steps: int  # optimiser steps the compiled grid ran, padding included
    cap_steps: int  # what training every configuration to the cap would have cost
    sizes: list  # (record, grid size) at each change of the padded grid size
    resumed_from_record: int  # 0, or the record a checkpoint was resumed at
    resumed_lane_steps: int  # the lane steps run before that (not part of ``seconds``)
    seconds_total: float | None  # training wall time over every process (None: an earlier one kept no count)


#: Compiled record programs of :func:`run_until_stopped`, by program and argument shapes (a grid
#: trained twice in one process, or resumed, compiles each size once).
_COMPILED: dict = {}


def _take(tree, index):
    return jax.tree.map(lambda a: a[index], tree)


def _host(tree):
    return jax.tree.map(np.asarray, tree)


def run_until_stopped(
    init: Callable,
    run: Callable,
    hyper,
    shared: tuple,
    log_every: int,
    max_records: int,
    decide: Callable[[int, Any], tuple[bool, Any]],
    keep: Callable[[Any], Any],
    checkpoint=None,
    checkpoint_seconds: float = 300.0,
    identity: str = "",
    progress=None,
    drop_finished: bool = True,
) -> StoppedGrid:
    """Train a grid record by record until every configuration has stopped by its rule, dropping
    the finished ones and resuming from a checkpoint.

    ``init(hyper, *shared) -> (state, first_record)`` and ``run(state, hyper, *shared, steps) ->
    (state, history)`` are ``jit(vmap(...))``-ed over the configuration axis of ``state`` and
    ``hyper`` (as for :func:`run_in_chunks`); ``run`` is called with one record of ``log_every``
    steps.  After every record ``decide(i, records_i)`` is asked for each running configuration
    ``i`` (``records_i``: its records so far, leading axis record) and returns ``(stopped, info)``;
    a stopped configuration's state is reduced to ``keep(state_i)`` and leaves the grid.  The
    running ones are gathered into a grid of :func:`padded_size` lanes (padding repeats the last
    running configuration, whose copies compute the same numbers and are discarded), with one
    compiled program per size.  A configuration still running after ``max_records`` records is
    passed to ``decide`` as usual, which must stop it there.  ``drop_finished=False`` keeps every
    configuration in the grid to the end (one compilation; the finished ones' further steps are
    discarded).

    ``checkpoint``: a file path.  The whole grid (records, kept states, running states) is written
    there atomically every ``checkpoint_seconds`` and when the grid finishes; if the file exists
    and was written for the same ``identity`` (a string naming the configuration), training
    continues from it, and the result is bitwise the one an uninterrupted run gives.

    >>> init = jax.jit(jax.vmap(lambda rate: (jnp.ones(()), jnp.ones(()))))
    >>> run = jax.jit(jax.vmap(lambda x, rate, steps: (x * rate ** steps[0], (x * rate ** steps[0])[None]), (0, 0, None)))
    >>> def decide(i, records):  # stop below 0.3, or at the cap of 4 records
    ...     return bool(records[-1] < 0.3) or len(records) == 4, len(records)
    >>> grid = run_until_stopped(init, run, jnp.array([0.5, 2.0, 0.9]), (), 1, 4, decide, keep=lambda state: state)
    >>> grid.decisions, [h.round(4).tolist() for h in grid.histories]
    ([2, 4, 4], [[0.5, 0.25], [2.0, 4.0, 8.0, 16.0], [0.9, 0.81, 0.729, 0.6561]])
    >>> grid.configuration_steps, grid.lane_steps, grid.cap_steps  # the first left the grid after 2 steps
    (10, 10, 12)
    """
    import pickle

    from linear_vae.core.io import atomic_write_bytes

    n = jax.tree.leaves(hyper)[0].shape[0]
    announce(progress, "compiling")
    compile_start = time.perf_counter()
    state, first_record = init(hyper, *shared)
    compile_seconds = time.perf_counter() - compile_start
    treedef = jax.tree.structure(state)
    first_record = _host(first_record)
    records: list[list] = [[] for _ in range(n)]
    kept: list = [None] * n
    decisions: list = [None] * n
    active = np.arange(n)
    done_records, lane_steps, configuration_steps, sizes, resumed, resumed_lane_steps = 0, 0, 0, [], 0, 0
    seconds_before: float | None = 0.0
    path = None if checkpoint is None else Path(checkpoint)
    if path is not None and path.exists():
        with open(path, "rb") as f:
            saved = pickle.load(f)
        if saved["identity"] != identity:
            raise ValueError(
                f"{path} was written by a different configuration; delete it, or resume with the settings that wrote it"
            )
        records, kept, decisions, active = saved["records"], saved["kept"], saved["decisions"], saved["active"]
        done_records, lane_steps, configuration_steps, sizes = (
            saved["records_done"],
            saved["lane_steps"],
            saved["configuration_steps"],
            saved["sizes"],
        )
        state = jax.tree.unflatten(treedef, [jnp.asarray(a) for a in saved["state"]])
        resumed, resumed_lane_steps = done_records, lane_steps
        seconds_before = saved.get("seconds")  # absent from checkpoints of versions that did not count
        layout = saved["layout"]
    else:
        layout = np.arange(n)

    def save():
        leaves = [np.asarray(a) for a in jax.tree.leaves(state)]
        blob = {
            "layout": layout,
            "identity": identity,
            "records": records,
            "kept": kept,
            "decisions": decisions,
            "active": active,
            "records_done": done_records,
            "lane_steps": lane_steps,
            "configuration_steps": configuration_steps,
            "sizes": sizes,
            "state": leaves,
            "seconds": None if seconds_before is None else seconds_before + time.perf_counter() - start,
        }
        atomic_write_bytes(path, pickle.dumps(blob, protocol=pickle.HIGHEST_PROTOCOL))

    steps = jnp.asarray([log_every], dtype=jnp.int32)
    start = last_save = time.perf_counter()
    announce(progress, "training")
    if not sizes:
        sizes.append((0, n))
    while active.size and done_records < max_records:
        size = padded_size(active.size, n) if drop_finished else n
        if drop_finished and (layout.size != size or not np.array_equal(layout[: active.size], active)):
            # Gather the running configurations (positions of ``active`` within ``layout``) and pad.
            positions = np.searchsorted(layout, active)
            index = np.concatenate([positions, np.full(size - active.size, positions[-1])])
            state = _take(state, index)
            layout = np.concatenate([active, np.full(size - active.size, active[-1])])
            if not sizes or sizes[-1][1] != size:
                sizes.append((done_records, size))
        lane_hyper = _take(hyper, layout)
        signature = (run, tuple((a.shape, a.dtype) for a in jax.tree.leaves((state, lane_hyper, shared))))
        if signature not in _COMPILED:
            compile_start = time.perf_counter()
            _COMPILED[signature] = run.lower(state, lane_hyper, *shared, steps).compile()
            spent = time.perf_counter() - compile_start
            compile_seconds += spent
            start += spent
            last_save += spent
        state, history = _COMPILED[signature](state, lane_hyper, *shared, steps)
        history = _host(history)
        done_records += 1
        lane_steps += size * log_every
        configuration_steps += active.size * log_every
        still = []
        for lane, i in zip(np.searchsorted(layout, active), active):
            records[i].append(_take(history, (lane, 0)))
            stopped, info = decide(int(i), _stack(records[i]))
            if stopped:
                kept[i], decisions[i] = _host(keep(_take(state, lane))), info
            else:
                still.append(i)
        active = np.asarray(still, dtype=int)
        if progress:
            progress(configuration_steps, n * max_records * log_every)
        if path is not None and (not active.size or time.perf_counter() - last_save >= checkpoint_seconds):
            save()
            last_save = time.perf_counter()
    if active.size:
        raise RuntimeError(f"`decide` left {active.size} configurations running after the last record")
    seconds = time.perf_counter() - start
    return StoppedGrid(
        first_record,
        [_stack(r) for r in records],
        kept,
        decisions,
        seconds,
        compile_seconds,
        configuration_steps,
        lane_steps,
        n * max_records * log_every,
        sizes,
        resumed,
        resumed_lane_steps,
        None if seconds_before is None else seconds_before + seconds,
    )


def _stack(records: list):
    return jax.tree.map(lambda *xs: np.stack(xs), *records)
