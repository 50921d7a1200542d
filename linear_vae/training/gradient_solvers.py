"""The optax optimisers of the linear trainer (Adam, plain gradient descent) as solvers (:class:`linear_vae.training.solver.Solver`).

What practitioners use, for the escape-time and training-curve experiments and for the
stochastic objective: a step ``theta -> theta + update(grad)`` of the negative objective with the
``learning_rate`` and ``schedule`` of the :class:`~linear_vae.training.train.TrainConfig` ("constant",
"cosine": decay to 0 over ``steps``, "exponential": to 1e-2 of the peak over ``steps``).  Their
state is optax's, a pytree of arrays.

References: docs/theory.md (T7).
"""

from __future__ import annotations

import jax
import optax

from linear_vae.training.solver import Objective, Solver


class OptaxSolver(Solver):
    """A first-order optax transformation of the whole trainable ``(params, log sigma2)``.

    >>> from linear_vae.training.train import TrainConfig
    >>> ADAM.name, ADAM.has_step_size, TrainConfig(2, optimizer="adam").resolved().steps
    ('adam', True, 20000)
    """

    def __init__(self, name: str, transformation):
        self.name = name
        self._transformation = transformation  # learning rate (or schedule) -> optax.GradientTransformation

    def optimizer(self, config) -> optax.GradientTransformation:
        """The optax optimiser and learning-rate schedule of ``config`` (minimising the negative objective).

        >>> import jax.numpy as jnp
        >>> from linear_vae.training.train import TrainConfig
        >>> optimizer = SGD.optimizer(TrainConfig(2, optimizer="sgd", learning_rate=0.1, schedule="constant"))
        >>> updates, _ = optimizer.update({"w": jnp.array([1.0, -2.0])}, optimizer.init({"w": jnp.zeros(2)}))
        >>> updates["w"]  # minus the learning rate times the gradient
        Array([-0.1,  0.2], dtype=float64)
        """
        lr = config.learning_rate
        if config.schedule == "cosine":
            lr = optax.cosine_decay_schedule(lr, config.steps)
        elif config.schedule == "exponential":
            lr = optax.exponential_decay(lr, config.steps, 1e-2)
        return self._transformation(lr)

    def init(self, trainable, objective: Objective, config):
        """optax's state of :meth:`optimizer` for ``trainable``.

        >>> import jax.numpy as jnp
        >>> from linear_vae.training.train import TrainConfig
        >>> state = ADAM.init({"w": jnp.zeros(2)}, None, TrainConfig(2, optimizer="adam").resolved())
        >>> int(state[0].count)  # optax's Adam state: no step taken yet
        0
        """
        return self.optimizer(config).init(trainable)

    def step(self, trainable, state, objective: Objective, key, config):
        """One optax step of ``trainable`` down ``objective.negative``: ``(trainable, state, loss)``.

        >>> import jax.numpy as jnp
        >>> from linear_vae.training.train import TrainConfig
        >>> config = TrainConfig(2, optimizer="sgd", learning_rate=0.1, schedule="constant")
        >>> objective = Objective(lambda trainable, key: jnp.sum((trainable["w"] - 1.0) ** 2), 1.0, False, None)
        >>> trainable, state, loss = SGD.step({"w": jnp.zeros(2)}, SGD.init({"w": jnp.zeros(2)}, objective, config), objective, None, config)
        >>> trainable["w"], float(loss)  # w - 0.1 * 2 (w - 1), and the loss before the step
        (Array([0.2, 0.2], dtype=float64), 2.0)
        """
        loss, grads = jax.value_and_grad(objective.negative)(trainable, key)
        updates, state = self.optimizer(config).update(grads, state, trainable)
        return optax.apply_updates(trainable, updates), state, loss


#: Adam (Kingma & Ba 2015) and plain gradient descent without momentum.
ADAM = OptaxSolver("adam", optax.adam)
SGD = OptaxSolver("sgd", optax.sgd)
