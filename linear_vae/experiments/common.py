"""Helpers shared by the experiments: load the data once, train a sweep, summarise it."""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from linear_vae.compare import compare_sweep
from linear_vae.datasets import Dataset, load_data
from linear_vae.moments import Moments, Spectrum, compute_moments, eigen_decomposition
from linear_vae.train import SweepResult, TrainConfig, TrainData, train_sweep


class Problem(NamedTuple):
    """A data set with its moments and eigen-decomposition (computed once per experiment)."""

    dataset: Dataset
    moments: Moments
    spectrum: Spectrum

    @property
    def eigenvalues(self) -> np.ndarray:
        return self.spectrum.eigenvalues


def load_problem(config: dict) -> Problem:
    """Load ``config['data']`` (``n``, ``subset_seed`` as in the CLI) and decompose its covariance."""
    dataset = load_data(config["data"], n=config.get("n"), subset_seed=config.get("subset_seed", 0))
    moments = compute_moments(dataset.X)
    return Problem(dataset, moments, eigen_decomposition(moments.cov))


def train(problem: Problem, config: TrainConfig, betas, sigma2s, seeds, basis: str = "data",
          progress: Callable[[str], None] | None = None, label: str = "") -> tuple[SweepResult, list[dict]]:
    """Train one sweep (one compiled call) and compare every configuration with the closed form."""
    config = config._replace(basis=basis).validate(problem.dataset.d, problem.dataset.n)
    data = TrainData.build(problem.dataset.X, problem.moments, problem.spectrum, basis)
    report = None
    if progress:
        def report(done, total):
            progress(f"{label} {done}/{total} steps")
    result = train_sweep(data, config, betas, sigma2s, seeds, progress=report)
    return result, compare_sweep(result, problem.spectrum, problem.moments, problem.dataset.X)


def data_description(problem: Problem, config: dict) -> dict:
    """What the JSON records about the data: source, subset seed, size and the top eigenvalues."""
    return {"data": config["data"], "n": problem.dataset.n, "d": problem.dataset.d,
            "subset_seed": config.get("subset_seed", 0),
            "eigenvalues": problem.eigenvalues[: max(config.get("latent_dim", 1) + 1, 40)].tolist()}
