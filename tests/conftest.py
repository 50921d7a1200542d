"""Test-suite set-up shared by every module."""

import os

import pytest
from threadpoolctl import threadpool_limits  # installed with scikit-learn (the test extra)

#: XLA compiles the suite's programs with LLVM's optimisations off and its older CPU fusion
#: emitters.  The suite is dominated by compilation (hundreds of small programs, most run for
#: milliseconds): measured on 2 cores, these flags compile the Newton sweep's programs 2.3x faster
#: (synthetic data, k = 3: 4.3 + 9.2 + 10.3 s -> 2.0 + 4.1 + 3.5 s for the initial state, the
#: training chunk and the convergence test).  They change how XLA generates machine code, not what
#: the code computes (no fast-math either way), so every claim tested holds as under the defaults.
#: The command lines CI runs outside pytest (``linear-vae reproduce --quick``, whose figures
#: ``tests/test_experiments.py`` checks, and the benchmarks) use XLA's defaults.  Set
#: ``LINEAR_VAE_TEST_XLA_DEFAULTS=1`` to run the suite under the defaults too.  Command lines the
#: tests start inherit the flags through the environment.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
if not os.environ.get("LINEAR_VAE_TEST_XLA_DEFAULTS"):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

#: The suite runs the docstring examples of ``linear_vae`` (``--doctest-modules`` in pyproject.toml).
#: Installed without ``-e``, as the README and CI install it, the package Python imports is the copy
#: in site-packages, not the files under ``linear_vae/`` that pytest collects, and pytest would refuse
#: each module ("import file mismatch").  Both are the same source, built from this checkout, so the
#: examples run against the installed package, which is what a user imports.
os.environ.setdefault("PY_IGNORE_IMPORTMISMATCH", "1")


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
    from linear_vae.theory.collapse import encoder_kl_matrix, epsilon_delta_collapsed
    from linear_vae.theory.optimum import beta_elbo_optimum

    def active(problem, k, beta, sigma2):
        optimum = beta_elbo_optimum(problem.eigenvalues, k, beta, sigma2)
        params = optimum.parameters(problem.moments.mean, problem.spectrum.eigenvectors)
        return k - int(epsilon_delta_collapsed(encoder_kl_matrix(params, problem.X)).sum())

    return active


@pytest.fixture(scope="session", autouse=True)
def _session_compilation_cache(tmp_path_factory):
    """One empty compilation cache per test run (:mod:`linear_vae.compilation_cache`), used by the
    tests' own programs and by the command lines they start, so that a program compiled once is
    read back wherever it recurs (in another test, in a subprocess, or in another worker under
    ``pytest -n``, whose workers share the folder); runs stay hermetic."""
    import tempfile
    from pathlib import Path

    from linear_vae import compilation_cache

    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")  # the same in every worker of one run
    if run:
        folder = Path(tempfile.gettempdir()) / f"linear-vae-test-cache-{run}"
    else:
        folder = tmp_path_factory.mktemp("compilation-cache")
    previous = os.environ.get(compilation_cache.ENV)
    os.environ[compilation_cache.ENV] = str(folder)
    compilation_cache.enable(folder)
    yield
    if previous is None:
        os.environ.pop(compilation_cache.ENV, None)
    else:
        os.environ[compilation_cache.ENV] = previous
