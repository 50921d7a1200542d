"""Run an experiment, save its numbers (JSON) and its figure (PNG) side by side, atomically.

Each experiment module in :mod:`linear_vae.experiments` defines ``NAME``, ``TITLE``, ``CONFIG``
(the full budget), ``QUICK`` (overrides for smoke runs and CI), ``run(config, progress) -> dict``
(every number the figure plots) and ``plot(results, config)``, which returns a Figure (saved as
``NAME.png``) or a dict of them (saved as ``NAME_KEY.png``).  The scripts in
``experiments/`` (through :func:`linear_vae.cli.script_main`) and ``linear-vae reproduce`` both
call :func:`run_experiment`.
"""

from __future__ import annotations

import functools
import importlib
import platform
import time
from pathlib import Path

from linear_vae.core.io import atomic_write_json
from linear_vae.core.progress import Progress
from linear_vae.experiments import EXPERIMENTS  # noqa: F401  (experiment modules in figure order)
from linear_vae.experiments.plotting import mark_quick, save_png


def load(name: str):
    """The experiment module called ``name`` (``ValueError`` listing the choices if unknown).

    >>> load("kl_per_dim").NAME
    'kl_per_dim'
    >>> load("kl")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown experiment 'kl'; choose from collapse_threshold, kl_per_dim, ...
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"linear_vae.experiments.{name}")


def versions() -> dict:
    """Versions of Python and of the libraries that produced a result.

    >>> sorted(versions()), versions()["source"] == source_fingerprint()
    (['jax', 'linear_vae', 'matplotlib', 'numpy', 'optax', 'python', 'source'], True)
    """
    import jax
    import matplotlib
    import numpy
    import optax

    import linear_vae

    return {
        "python": platform.python_version(),
        "linear_vae": linear_vae.__version__,
        "jax": jax.__version__,
        "optax": optax.__version__,
        "numpy": numpy.__version__,
        "matplotlib": matplotlib.__version__,
        "source": source_fingerprint(),
    }


@functools.lru_cache(maxsize=1)
def source_fingerprint() -> str:
    """SHA-256 of the package's source and shipped data (every file under :mod:`linear_vae` but
    byte code, by relative path and content): results with the same fingerprint and library
    versions were made by the same code from the same data.  Computed once per process (the
    files are read and hashed in full, and every experiment's :func:`versions` asks).

    >>> len(source_fingerprint()), int(source_fingerprint(), 16) > 0  # 64 hexadecimal digits
    (64, True)
    """
    import hashlib

    import linear_vae

    root = Path(linear_vae.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def experiment_config(name: str, quick: bool) -> dict:
    """The full configuration of ``name``, with its ``QUICK`` overrides when ``quick``.

    >>> experiment_config("kl_per_dim", quick=False)["betas"], experiment_config("kl_per_dim", quick=True)["betas"]
    ([4.0, 80.0, 12], [4.0, 80.0, 5])
    """
    module = load(name)
    return {**module.CONFIG, **(module.QUICK if quick else {})}


def checkpoint_path(name: str, out_dir) -> Path:
    """Where a resumable experiment (one whose module sets ``RESUMABLE``) keeps its training state.

    >>> checkpoint_path("deep_vae", "figures").as_posix()
    'figures/deep_vae.checkpoint.pkl'
    """
    return Path(out_dir) / f"{name}.checkpoint.pkl"


def run_experiment(
    name: str,
    out_dir="figures",
    quick: bool = False,
    progress: Progress | None = None,
    command: str | None = None,
    resume: bool = False,
    restart: bool = False,
    finished_parts: bool = False,
) -> dict:
    """Run ``name``, write ``out_dir/name.json`` and ``out_dir/name.png``, return the JSON payload.

    ``progress`` (:class:`linear_vae.core.progress.Progress`) is shown each training task and the drawing.

    With ``quick`` every figure carries :data:`linear_vae.experiments.plotting.QUICK_NOTE` on the image.

    A resumable experiment (the deep-VAE studies) checkpoints its full-budget training to
    :func:`checkpoint_path` every few minutes (a quick run, a minute or two, keeps none).  If that
    file exists, ``resume`` continues from it and ``restart`` deletes it and starts over; with
    neither, ``ValueError`` (hours of training are not thrown away unasked;
    :func:`unresolved_checkpoints` lets a command refuse before it runs anything).

    ``finished_parts`` (a study trained in parts, full budget): train nothing, and write the JSON
    and figures from the parts already finished in ``out_dir``; the figures say which are missing.

    With a toy experiment in place of the registered ones (each trains for a while):

    >>> import os, tempfile, types
    >>> from unittest import mock
    >>> from linear_vae.experiments.plotting import new_figure
    >>> def plot(results, config):
    ...     fig, axes = new_figure(width=3.0, height=2.0)
    ...     axes[0, 0].plot(results["x"], results["y"])
    ...     return fig
    >>> def run(config, progress=None):
    ...     return {"x": list(range(config["n"])), "y": [i * i for i in range(config["n"])]}
    >>> toy = types.SimpleNamespace(NAME="toy", TITLE="A toy", CONFIG={"n": 5}, QUICK={"n": 3}, run=run, plot=plot)
    >>> out = tempfile.mkdtemp()
    >>> with mock.patch("linear_vae.experiments.runner.load", lambda name: toy):
    ...     payload = run_experiment("toy", out, quick=True)
    >>> payload["config"], payload["results"], payload["command"], sorted(os.listdir(out))
    ({'n': 3}, {'x': [0, 1, 2], 'y': [0, 1, 4]}, 'linear-vae reproduce --only toy --quick', ['toy.json', 'toy.png'])
    """
    module = load(name)
    config = experiment_config(name, quick)
    extra = {}
    if finished_parts:
        check_finished_parts([name], out_dir, quick=quick, resume=resume)
        extra["finished_only"] = True
    if getattr(module, "RESUMABLE", False) and not quick:
        checkpoint = checkpoint_path(name, out_dir)
        if checkpoint.exists() and not (resume or finished_parts):
            if not restart:
                raise ValueError(
                    f"{checkpoint} holds the training state of an earlier {name} run; continue it with --resume, or "
                    "start over with --force"
                )
            checkpoint.unlink()
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        extra["checkpoint"] = checkpoint
    start = time.perf_counter()
    results = module.run(config, progress=progress, **extra)
    seconds = time.perf_counter() - start
    payload = {
        "name": name,
        "title": module.TITLE,
        "quick": quick,
        "command": command or " ".join(["linear-vae", "reproduce", "--only", name] + (["--quick"] if quick else [])),
        "config": config,
        "versions": versions(),
        "seconds": seconds,
        "results": results,
    }
    out_dir = Path(out_dir)
    if progress is not None:
        progress.task(name)
        progress.phase("drawing")
    figures = figure_paths(name, module.plot(results, config))
    payload["figures"] = sorted(figures)
    for path, fig in figures.items():
        if quick:
            mark_quick(fig)  # a quick figure says so on the image, not only in the JSON
        save_png(fig, out_dir / path)
    atomic_write_json(out_dir / f"{name}.json", payload)
    return payload


def check_finished_parts(names, out_dir, quick: bool = False, resume: bool = False) -> None:
    """Refuse (``ValueError``) a ``finished_parts`` run of ``names`` that would have nothing to read:
    it trains nothing, so not with ``quick`` or ``resume``, only for a study trained in parts
    (``RESUMABLE``), and only once a part of it is finished in ``out_dir``.  ``reproduce
    --finished-parts`` calls it before anything runs, :func:`run_experiment` before it runs ``name``.

    >>> check_finished_parts(["deep_vae"], "figures", quick=True)
    Traceback (most recent call last):
        ...
    ValueError: --finished-parts trains nothing: drop --quick and --resume
    >>> check_finished_parts(["landscape"], "figures")
    Traceback (most recent call last):
        ...
    ValueError: --finished-parts reads a study trained in parts (deep_vae, deep_vae_fashion), not landscape
    """
    if quick or resume:
        raise ValueError("--finished-parts trains nothing: drop --quick and --resume")
    for name in names:
        if not getattr(load(name), "RESUMABLE", False):
            raise ValueError(
                f"--finished-parts reads a study trained in parts (deep_vae, deep_vae_fashion), not {name}"
            )
        if not list(Path(out_dir).glob(f"{name}.part-*.json")):
            raise ValueError(f"no part of {name} is finished in {out_dir}; train one first (--resume trains the next)")


def unresolved_checkpoints(names, out_dir, quick: bool) -> list[Path]:
    """The checkpoints in ``out_dir`` that running ``names`` without ``resume`` or ``restart`` would
    refuse to overwrite (:func:`run_experiment`).

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> unresolved_checkpoints(["deep_vae", "kl_per_dim"], out, quick=False)
    []
    >>> checkpoint_path("deep_vae", out).write_bytes(b"state")
    5
    >>> [path.name for path in unresolved_checkpoints(["deep_vae", "kl_per_dim"], out, quick=False)]
    ['deep_vae.checkpoint.pkl']
    >>> unresolved_checkpoints(["deep_vae"], out, quick=True)  # a quick run keeps no checkpoint
    []
    """
    if quick:
        return []
    return [
        checkpoint_path(name, out_dir)
        for name in names
        if getattr(load(name), "RESUMABLE", False) and checkpoint_path(name, out_dir).exists()
    ]


def figure_paths(name: str, figures) -> dict:
    """``{file name: figure}``: ``NAME.png`` for one figure, ``NAME_KEY.png`` for a dict of them.

    >>> figure_paths("landscape", "figure"), figure_paths("landscape", {"a": "first", "b": "second"})
    ({'landscape.png': 'figure'}, {'landscape_a.png': 'first', 'landscape_b.png': 'second'})
    """
    if isinstance(figures, dict):
        return {f"{name}_{key}.png": fig for key, fig in figures.items()}
    return {f"{name}.png": figures}
