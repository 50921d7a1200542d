"""Expectations of squared affine maps of a pair ``u = (x, y)``, from its moments, in JAX.

Every term of the exact objectives of the linear CVAE and HVAE (docs/theory.md (T17.1, T17.7)) is
``E||L u + o||^2`` for a linear map ``L`` of the pair and an offset ``o``.  With the joint second
moment ``J = [[A, C], [C^T, B]]`` and the sample mean ``mu = (mean_x, mean_y)``:

* centred moments (a model with biases): ``E||L u + o||^2 = tr(L J L^T) + ||L mu + o||^2``;
* raw moments (``J`` is already ``E[u u^T]``): ``tr(L J L^T) + 2 o^T L mu + ||o||^2``.

The centred form keeps the mean apart, so data far from the origin lose no precision to cancellation.

References: docs/theory.md (T17.1).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from linear_vae.data.joint_moments import JointMoments


class JointArrays(NamedTuple):
    """``J`` (d_x + d_y, d_x + d_y), ``mu`` (d_x + d_y,) and ``centred`` (1.0 or 0.0) as device arrays."""

    J: jax.Array
    mu: jax.Array
    centred: jax.Array

    @classmethod
    def from_moments(cls, moments: JointMoments) -> "JointArrays":
        """The joint moments of ``moments``, float64.

        >>> import numpy as np
        >>> m = JointMoments.from_matrices(np.eye(1), np.ones((1, 1)), 2 * np.eye(1))
        >>> JointArrays.from_moments(m).J
        Array([[1., 1.],
               [1., 2.]], dtype=float64)

        References: docs/theory.md (T17.1).
        """
        J = jnp.block([[moments.xx, moments.xy], [moments.xy.T, moments.yy]])
        mu = jnp.concatenate([jnp.asarray(moments.mean_x), jnp.asarray(moments.mean_y)])
        return cls(J.astype(jnp.float64), mu.astype(jnp.float64), jnp.asarray(1.0 if moments.centred else 0.0))


def expected_square(L, offset, joint: JointArrays):
    """``E||L u + o||^2`` over the data (see the module docstring).

    >>> import numpy as np
    >>> m = JointMoments.from_data(np.array([[0.0], [2.0]]), np.array([[1.0], [3.0]]))  # centred
    >>> float(expected_square(jnp.array([[1.0, 1.0]]), jnp.array([-4.0]), JointArrays.from_moments(m)))  # x + y - 4: -3, 1
    5.0

    References: docs/theory.md (T17.1).
    """
    spread = jnp.sum((L @ joint.J) * L)
    shift = L @ joint.mu
    centred = jnp.sum((shift + offset) ** 2)
    raw = 2.0 * offset @ shift + offset @ offset
    return spread + joint.centred * centred + (1.0 - joint.centred) * raw
