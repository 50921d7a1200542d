"""Why Newton runs on the projected objective: Hessian spectra at the optimum of the hard cases.

For each small hard case (``linear_vae.verification.hard_cases``, d = 64, so the d k x d k Hessian can be formed
densely) and each beta, at the closed-form optimum:

* ``encoder_projected``: the Hessian in ``W`` of the ELBO with only the bias and the encoder
  maximised out (variable projection over the encoder alone);
* ``rotation_projected``: the Hessian of ``Phi`` (:func:`linear_vae.training.projected.projected_elbo`), which also
  maximises out the latent rotation; its k(k-1)/2 rotation directions are exactly flat and are
  counted apart (``null``), the condition number is over the rest.

Writes ``benchmarks/conditioning.json``: ``python benchmarks/conditioning.py``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import linear_vae  # noqa: F401  (float64)
from linear_vae.core import io
from linear_vae.data.problem import Problem
from linear_vae.theory.elbo import DataStats, exact_elbo, with_optimal_encoder
from linear_vae.theory.optimum import beta_elbo_optimum
from linear_vae.training.projected import projected_elbo
from linear_vae.verification.hard_cases import hard_cases

OUT = Path(__file__).with_name("conditioning.json")


def spectrum(hessian: np.ndarray, null_tol: float = 1e-9) -> dict:
    """Eigenvalues of ``-H`` (positive at a maximum): condition number over the non-null ones."""
    values = np.linalg.eigvalsh(-hessian)
    scale = np.abs(values).max()
    null = np.abs(values) <= null_tol * scale
    kept = np.abs(values[~null])
    return {
        "largest": float(kept.max()),
        "smallest": float(kept.min()),
        "condition_number": float(kept.max() / kept.min()),
        "null": int(null.sum()),
        "negative": int(np.sum(values[~null] < 0)),
    }


def main() -> None:
    rows = []
    for case in hard_cases():
        if case.sigma2 is None:
            continue  # fixed sigma2 only: the Hessian in W at a given sigma2
        problem = Problem.from_dataset(case.make())
        d, k = problem.dataset.d, case.latent_dim
        if d * k > 1024:
            continue
        stats = DataStats.from_moments(problem.mean, problem.cov)
        for beta in case.betas:
            optimum = beta_elbo_optimum(problem.eigenvalues, k, beta, case.sigma2)
            W = jnp.asarray(optimum.parameters(problem.mean, problem.eigenvectors).W)

            def encoder_projected(w):
                params = with_optimal_encoder(w.reshape(d, k), stats.mean, case.sigma2, beta)
                return exact_elbo(params, case.sigma2, beta, stats)

            def rotation_projected(w):
                return projected_elbo(w.reshape(d, k), jnp.log(case.sigma2), beta, stats)

            row = {
                "case": case.name,
                "d": d,
                "k": k,
                "sigma2": case.sigma2,
                "beta": beta,
                "active_dims": optimum.active_dims,
            }
            for name, fn in (("encoder_projected", encoder_projected), ("rotation_projected", rotation_projected)):
                row[name] = spectrum(np.asarray(jax.hessian(fn)(W.reshape(-1))))
            rows.append(row)
            print(
                f"{case.name:>18} beta {beta:>5g}: condition number {row['encoder_projected']['condition_number']:.3g}"
                f" (encoder projected) vs {row['rotation_projected']['condition_number']:.3g} (rotation too, "
                f"{row['rotation_projected']['null']} null directions)"
            )
    io.atomic_write_bytes(
        OUT, io.dumps({"command": "python benchmarks/conditioning.py", "rows": rows}, indent=1).encode()
    )


if __name__ == "__main__":
    main()
