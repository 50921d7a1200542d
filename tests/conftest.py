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
