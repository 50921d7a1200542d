"""Test-suite set-up shared by every module."""

import pytest
from threadpoolctl import threadpool_limits  # installed with scikit-learn (the test extra)


@pytest.fixture(scope="session", autouse=True)
def _single_blas_thread():
    """Run numpy's LAPACK calls on one BLAS thread.

    On a 2-core machine shared with other processes (or with JAX's own thread pool), OpenBLAS's
    busy-waiting worker threads made a 784 x 784 eigh / 1000 x 784 SVD ~30x slower (measured:
    5 s instead of 0.16 s); one thread is as fast for matrices this size.  Results are unchanged.
    """
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def closed_form_active_epsilon_delta():
    """``f(problem, k, beta, sigma2)``: latent dimensions of the closed-form optimal encoder that are
    not (epsilon, delta)-collapsed on ``problem.X`` (the reference for a trained model's count).

    ``problem`` has ``eigenvalues``, ``moments``, ``spectrum`` and ``X``.
    """
    from linear_vae.collapse import encoder_kl_matrix, epsilon_delta_collapsed
    from linear_vae.optimum import beta_elbo_optimum

    def active(problem, k, beta, sigma2):
        optimum = beta_elbo_optimum(problem.eigenvalues, k, beta, sigma2)
        params = optimum.parameters(problem.moments.mean, problem.spectrum.eigenvectors)
        return k - int(epsilon_delta_collapsed(encoder_kl_matrix(params, problem.X)).sum())

    return active


@pytest.fixture(scope="session", autouse=True)
def _session_compilation_cache(tmp_path_factory):
    """One empty compilation cache per test session (:mod:`linear_vae.compilation_cache`), so that runs
    stay hermetic while the command lines started by the tests share their compiled programs."""
    import os

    from linear_vae.compilation_cache import ENV

    previous = os.environ.get(ENV)
    os.environ[ENV] = str(tmp_path_factory.mktemp("compilation-cache"))
    yield
    if previous is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = previous
