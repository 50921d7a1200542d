"""The optax optimisers of the linear trainer (Adam, plain gradient descent) as solvers (:class:`linear_vae.solver.Solver`).

What practitioners use, for the escape-time and training-curve experiments and for the
stochastic objective: a step ``theta -> theta + update(grad)`` of the negative objective with the
``learning_rate`` and ``schedule`` of the :class:`~linear_vae.train.TrainConfig` ("constant",
"cosine": decay to 0 over ``steps``, "exponential": to 1e-2 of the peak over ``steps``).  Their
state is optax's, a pytree of arrays.

References: docs/theory.md (T7).
"""

from __future__ import annotations

import jax
import optax

from linear_vae.solver import Objective, Solver


class OptaxSolver(Solver):
    """A first-order optax transformation of the whole trainable ``(params, log sigma2)``."""

    def __init__(self, name: str, transformation):
        self.name = name
        self._transformation = transformation  # learning rate (or schedule) -> optax.GradientTransformation

    def optimizer(self, config) -> optax.GradientTransformation:
        """The optax optimiser and learning-rate schedule of ``config`` (minimising the negative objective)."""
        lr = config.learning_rate
        if config.schedule == "cosine":
            lr = optax.cosine_decay_schedule(lr, config.steps)
        elif config.schedule == "exponential":
            lr = optax.exponential_decay(lr, config.steps, 1e-2)
        return self._transformation(lr)

    def init(self, trainable, objective: Objective, config):
        return self.optimizer(config).init(trainable)

    def step(self, trainable, state, objective: Objective, key, config):
        loss, grads = jax.value_and_grad(objective.negative)(trainable, key)
        updates, state = self.optimizer(config).update(grads, state, trainable)
        return optax.apply_updates(trainable, updates), state, loss


#: Adam (Kingma & Ba 2015) and plain gradient descent without momentum.
ADAM = OptaxSolver("adam", optax.adam)
SGD = OptaxSolver("sgd", optax.sgd)
