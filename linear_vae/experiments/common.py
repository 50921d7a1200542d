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
    """Load ``config['data']`` (``n``, ``subset_seed`` as in the CLI) and decompose its covariance.

    >>> problem = load_problem({"data": "synthetic", "n": 200})  # the known spectrum of linear_vae.data.datasets
    >>> problem.n, problem.d, problem.eigenvalues[:3].round(6)
    (200, 20, array([8. , 6. , 4.5]))
    """
    return Problem.from_dataset(load_data(config["data"], n=config.get("n"), subset_seed=config.get("subset_seed", 0)))


def newton_config(config: dict, latent_dim: int) -> TrainConfig:
    """The linear trainer as an experiment's ``CONFIG`` names it: ``optimizer``, ``steps`` and
    ``gain_tol`` (the convergence test of Newton's method), for ``latent_dim`` latents.

    >>> config = newton_config({"optimizer": "newton", "steps": 500, "gain_tol": 1e-12, "data": "mnist"}, latent_dim=3)
    >>> config.latent_dim, config.optimizer, config.steps, config.gain_tol
    (3, 'newton', 500, 1e-12)
    """
    return TrainConfig(
        latent_dim=latent_dim, optimizer=config["optimizer"], steps=config["steps"], gain_tol=config["gain_tol"]
    )


#: The deep trainer's settings an experiment's ``CONFIG`` may name (any it omits keep their default).
DEEP_TRAINING_KEYS = ("steps", "log_every", "batch_size", "learning_rate", "sigma2_learning_rate", "schedule")


def deep_config(config: dict, **architecture) -> DeepConfig:
    """A :class:`~linear_vae.deep.deep.DeepConfig` with the training settings of ``config``
    (:data:`DEEP_TRAINING_KEYS`) and the given architecture (``latent_dim``, ``hidden``, ...).

    >>> config = deep_config({"data": "mnist", "steps": 100, "batch_size": 50}, latent_dim=2, hidden=(8,))
    >>> config.steps, config.batch_size, config.latent_dim, config.hidden, config.learning_rate  # the rest: defaults
    (100, 50, 2, (8,), 0.001)
    """
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
    """:func:`linear_vae.verification.compare.train_and_compare_zipped` in ``basis``, shown on ``progress`` as the task ``label``.

    >>> problem = load_problem({"data": "synthetic", "n": 200})
    >>> result, reports = train(problem, TrainConfig(latent_dim=1), [1.0], [0.5], [0], basis="eigen")
    >>> reports[0]["verdict"], abs(reports[0]["gap"]) < 1e-9  # converged, on the closed-form optimum
    ('agrees', True)
    """
    if progress is not None:
        progress.task(label)
    # The experiments give a learned sigma2's starts in ``sigma2s`` (their configs name them so).
    starts = {"sigma2_init": sigma2s} if config.learn_sigma2 else {"sigma2s": sigma2s}
    return train_and_compare_zipped(
        problem, config._replace(basis=basis), betas, seeds=seeds, progress=progress, **starts
    )


#: How a figure names the shipped data sets.
DATA_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


def data_name(config: dict) -> str:
    """The data's name on a figure: the shipped sets by their own names, any other as given.

    >>> data_name({"data": "fashion_mnist"}), data_name({"data": "synthetic"})
    ('Fashion-MNIST', 'synthetic')
    """
    return DATA_NAMES.get(config["data"], config["data"])


def data_description(problem: Problem, config: dict) -> dict:
    """What the JSON records about the data: source, subset seed, size and the top eigenvalues.

    >>> config = {"data": "synthetic", "n": 200, "latent_dim": 2}
    >>> description = data_description(load_problem(config), config)
    >>> {key: value for key, value in description.items() if key != "eigenvalues"}
    {'data': 'synthetic', 'n': 200, 'd': 20, 'subset_seed': 0}
    >>> [round(value, 6) for value in description["eigenvalues"][:3]], len(description["eigenvalues"])  # all 20 (up to 40)
    ([8.0, 6.0, 4.5], 20)
    """
    return {
        "data": config["data"],
        "n": problem.dataset.n,
        "d": problem.dataset.d,
        "subset_seed": config.get("subset_seed", 0),
        "eigenvalues": problem.eigenvalues[: max(config.get("latent_dim", 1) + 1, 40)].tolist(),
    }
