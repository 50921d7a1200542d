"""Helpers shared by the experiments: load the data once, train a sweep, summarise it."""

from __future__ import annotations

from linear_vae.core.progress import Progress
from linear_vae.data.datasets import load_data
from linear_vae.data.problem import Problem
from linear_vae.deep.deep import DeepConfig
from linear_vae.training.sweep import SweepResult
from linear_vae.training.train import TrainConfig
from linear_vae.verification.compare import train_and_compare_zipped


def load_problem(config: dict) -> Problem:
    """Load ``config['data']`` (``n``, ``subset_seed`` as in the CLI) and decompose its covariance."""
    return Problem.from_dataset(load_data(config["data"], n=config.get("n"), subset_seed=config.get("subset_seed", 0)))


def newton_config(config: dict, latent_dim: int) -> TrainConfig:
    """The linear trainer as an experiment's ``CONFIG`` names it: ``optimizer``, ``steps`` and
    ``gain_tol`` (the convergence test of Newton's method), for ``latent_dim`` latents."""
    return TrainConfig(
        latent_dim=latent_dim, optimizer=config["optimizer"], steps=config["steps"], gain_tol=config["gain_tol"]
    )


#: The deep trainer's settings an experiment's ``CONFIG`` may name (any it omits keep their default).
DEEP_TRAINING_KEYS = ("steps", "log_every", "batch_size", "learning_rate", "sigma2_learning_rate", "schedule")


def deep_config(config: dict, **architecture) -> DeepConfig:
    """A :class:`~linear_vae.deep.deep.DeepConfig` with the training settings of ``config``
    (:data:`DEEP_TRAINING_KEYS`) and the given architecture (``latent_dim``, ``hidden``, ...)."""
    return DeepConfig(**{key: config[key] for key in DEEP_TRAINING_KEYS if key in config}, **architecture)


def train(
    problem: Problem,
    config: TrainConfig,
    betas,
    sigma2s,
    seeds,
    basis: str = "data",
    progress: Progress | None = None,
    label: str = "",
) -> tuple[SweepResult, list[dict]]:
    """:func:`linear_vae.verification.compare.train_and_compare_zipped` in ``basis``, shown on ``progress`` as the task ``label``."""
    if progress is not None:
        progress.task(label)
    # The experiments give a learned sigma2's starts in ``sigma2s`` (their configs name them so).
    starts = {"sigma2_init": sigma2s} if config.learn_sigma2 else {"sigma2s": sigma2s}
    return train_and_compare_zipped(
        problem, config._replace(basis=basis), betas, seeds=seeds, progress=progress, **starts
    )


def data_description(problem: Problem, config: dict) -> dict:
    """What the JSON records about the data: source, subset seed, size and the top eigenvalues."""
    return {
        "data": config["data"],
        "n": problem.dataset.n,
        "d": problem.dataset.d,
        "subset_seed": config.get("subset_seed", 0),
        "eigenvalues": problem.eigenvalues[: max(config.get("latent_dim", 1) + 1, 40)].tolist(),
    }
