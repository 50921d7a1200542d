"""The linear VAE as an estimator in the scikit-learn style, for those who know ``PCA`` and
``FactorAnalysis``: ``LinearVAE(latent_dim).fit(X)``, then ``transform``, ``score``, ``sample``,
``save`` and ``load``.

``fit`` trains one configuration through :func:`linear_vae.verification.compare.train_and_compare_zipped` (Newton on
the exact ELBO by default; the trainer, the convergence test and the comparison with the closed
form are the library's own) and keeps what a user asks of a fitted model as attributes with a
trailing underscore.  The model is::

    p(z) = N(0, I_k),  p(x | z) = N(W z + mu, sigma2 I_d),  q(z | x) = N(V (x - mu), diag(D))

and :meth:`LinearVAE.score_samples` is its exact beta-ELBO per row (docs/theory.md (T3.1), written
per datapoint), so ``score`` is in nats per datapoint like ``PCA.score`` (which is the exact
log-likelihood; at beta = 1 and the optimum the two agree, the bound being tight there).

scikit-learn is not a dependency: the class implements ``get_params``/``set_params`` itself and
gives scikit-learn its tags only when scikit-learn asks (``__sklearn_tags__``), so
``sklearn.utils.estimator_checks.check_estimator`` runs on it (``tests/test_estimator.py``)
without the package importing scikit-learn.

Example
-------
>>> import numpy as np
>>> from linear_vae import LinearVAE
>>> X = np.random.default_rng(0).normal(size=(200, 5)) * [3.0, 2.0, 1.0, 0.5, 0.5]
>>> model = LinearVAE(latent_dim=2, sigma2=0.5).fit(X)
>>> model.converged_, model.active_dims_
(True, 2)
>>> abs(model.gap_) < 1e-6
True
>>> model.transform(X).shape
(200, 2)
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import numpy as np

from linear_vae.core.io import atomic_write_bytes
from linear_vae.core.validation import check_latent_dim, check_positive, validate_data
from linear_vae.data.moments import LOG_2PI
from linear_vae.theory.elbo import LinearVAEParams

#: Version of the ``.npz`` layout written by :meth:`LinearVAE.save`.
SAVE_FORMAT = 1


def _as_data(X, what: str = "X") -> np.ndarray:
    """``X`` as a float64 (N, d) array, or ``ValueError``/``TypeError`` saying what to change (worded
    as scikit-learn words them, where its estimator checks look for the words)."""
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{what} is a sparse matrix; the linear VAE needs dense data: pass X.toarray()")
    X = np.asarray(X)
    if X.dtype.kind == "c":
        raise ValueError(f"{what} holds complex numbers; Complex data not supported: pass real values")
    try:
        X = X.astype(np.float64)
    except TypeError as error:
        raise TypeError(f"{what} must hold numbers ({error})") from None
    except ValueError as error:
        raise ValueError(f"{what} must hold numbers ({error}); convert it to a float array") from None
    if X.ndim != 2:
        raise ValueError(
            f"{what} must be 2-D (samples x features), got shape {X.shape}; Reshape your data with X.reshape(-1, 1) "
            "for one feature or X.reshape(1, -1) for one sample"
        )
    if X.shape[1] == 0:
        raise ValueError(f"{what} has 0 feature(s) (shape=({X.shape[0]}, 0)) while a minimum of 1 is required.")
    if X.shape[0] == 0:
        raise ValueError(f"{what} has 0 sample(s) (shape=(0, {X.shape[1]})) while a minimum of 1 is required.")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{what} contains NaN or inf; remove or impute those values")
    return X


class NotFittedError(ValueError, AttributeError):
    """A method that needs a fitted model was called before ``fit`` (as scikit-learn's)."""


class LinearVAE:
    """A linear VAE fitted by gradient training and checked against its closed form.

    Parameters
    ----------
    latent_dim : int, default 2
        k, at most the number of features.
    beta : float, default 1.0
        The KL weight of the beta-ELBO.
    sigma2 : float or None, default None
        The observation noise, fixed; ``None`` learns it (its start is ``sigma2_init``).
    sigma2_init : float or None, default None
        The start of a learned ``sigma2`` (default: the mean variance of the data); not allowed
        with a fixed ``sigma2``.
    optimizer : {"newton", "adam", "sgd"}, default "newton"
        See :class:`linear_vae.training.train.TrainConfig`.
    steps, learning_rate : optional
        The optimiser's budget and step size (defaults: the optimiser's own; Newton has no step size).
    seed : int, default 0
        Seed of the initial parameters.

    Attributes
    ----------
    components_ : (k, d) array
        The decoder's columns as rows (``W.T``, the layout of ``PCA.components_``).
    mean_ : (d,) array
        The decoder bias ``mu``.
    noise_variance_ : float
        ``sigma2`` (learned or fixed).
    encoder_ : tuple ``(V, D)``
        Encoder weights (k, d) and diagonal variances (k,).
    converged_ : bool
        Whether training met the convergence test (:mod:`linear_vae.training.newton`).
    gap_ : float
        Closed-form optimum minus the trained ELBO, nats per datapoint.
    verdict_ : str
        :func:`linear_vae.verification.compare.verdict`: "agrees", "not converged", ...
    active_dims_ : int
        Latent dimensions in use, by column norm (docs/theory.md (T5.2)).
    report_ : dict
        The full trained-versus-analytic report.
    n_features_in_ : int

    Example
    -------
    >>> X = np.random.default_rng(0).normal(size=(200, 5)) * [3.0, 2.0, 1.0, 0.5, 0.5]
    >>> model = LinearVAE(latent_dim=2, sigma2=0.5).fit(X)
    >>> model  # the settings that differ from the defaults
    LinearVAE(sigma2=0.5)
    >>> model.components_.shape, model.verdict_, model.active_dims_
    ((2, 5), 'agrees', 2)
    """

    def __init__(
        self,
        latent_dim: int = 2,
        *,
        beta: float = 1.0,
        sigma2: float | None = None,
        sigma2_init: float | None = None,
        optimizer: str = "newton",
        steps: int | None = None,
        learning_rate: float | None = None,
        seed: int = 0,
    ):
        self.latent_dim = latent_dim
        self.beta = beta
        self.sigma2 = sigma2
        self.sigma2_init = sigma2_init
        self.optimizer = optimizer
        self.steps = steps
        self.learning_rate = learning_rate
        self.seed = seed

    # -- scikit-learn protocol -----------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's arguments (scikit-learn's ``get_params``).

        >>> LinearVAE(latent_dim=3, beta=2.0).get_params()["beta"]
        2.0
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> "LinearVAE":
        """Set constructor arguments (scikit-learn's ``set_params``); unknown names raise ``ValueError``.

        >>> LinearVAE(latent_dim=3).set_params(beta=4.0, sigma2=0.5)
        LinearVAE(latent_dim=3, beta=4.0, sigma2=0.5)
        """
        for name, value in params.items():
            if name not in self._param_names():
                raise ValueError(f"unknown parameter {name!r}; choose from {', '.join(self._param_names())}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if v != defaults.get(k)]
        return f"LinearVAE({', '.join(changed)})"

    def __sklearn_tags__(self):
        """scikit-learn's tags (asked only by scikit-learn, so importing it here costs nothing else)."""
        from sklearn.utils import Tags, TargetTags, TransformerTags

        tags = Tags(estimator_type=None, target_tags=TargetTags(required=False), transformer_tags=TransformerTags())
        tags.input_tags.sparse = False
        return tags

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, X, y=None) -> "LinearVAE":
        """Train on the rows of ``X`` ((N, d), float64); ``y`` is ignored.  Returns ``self``.

        >>> X = np.random.default_rng(0).normal(size=(200, 5)) * [3.0, 2.0, 1.0, 0.5, 0.5]
        >>> model = LinearVAE(latent_dim=2, sigma2=0.5).fit(X)
        >>> model.converged_, round(model.noise_variance_, 6), abs(model.gap_) < 1e-9
        (True, 0.5, True)
        """
        from linear_vae.data.problem import Problem
        from linear_vae.training import solvers
        from linear_vae.training.train import TrainConfig
        from linear_vae.verification.compare import train_and_compare_zipped

        X = _as_data(X)
        validate_data(X)
        n, d = X.shape
        latent_dim = check_latent_dim(self.latent_dim, d)
        beta = check_positive("beta", self.beta)
        learn = self.sigma2 is None
        if not learn and self.sigma2_init is not None:
            raise ValueError("`sigma2_init` is the start of a learned sigma2, but `sigma2` fixes it; drop one")
        problem = Problem.from_data(X)
        fixed = None if learn else check_positive("sigma2", self.sigma2)
        start = None if self.sigma2_init is None else check_positive("sigma2_init", self.sigma2_init)
        options = {} if self.steps is None else {"steps": int(self.steps)}
        if self.learning_rate is not None:
            if not solvers.resolve(self.optimizer).has_step_size:
                raise ValueError(
                    f"`learning_rate` does nothing for `optimizer` {self.optimizer}; drop it or choose adam or sgd"
                )
            options["learning_rate"] = check_positive("learning_rate", self.learning_rate)
        config = TrainConfig(latent_dim, optimizer=self.optimizer, learn_sigma2=learn, **options)
        result, (report,) = train_and_compare_zipped(problem, config, beta, fixed, int(self.seed), sigma2_init=start)
        return self.take_trained(result, 0, report, problem)

    def take_trained(self, result, index: int, report: dict, problem) -> "LinearVAE":
        """Become configuration ``index`` of a trained sweep (:class:`linear_vae.training.sweep.SweepResult`,
        with its ``report`` from :func:`linear_vae.verification.compare.compare_sweep` and the ``problem`` it was
        trained on): how ``fit`` and ``linear-vae train --save-model`` make a model.  Returns ``self``.

        >>> from linear_vae.verification.compare import train_and_compare_zipped
        >>> from linear_vae.data.problem import Problem
        >>> from linear_vae.training.train import TrainConfig
        >>> X = np.random.default_rng(0).normal(size=(200, 5)) * [3.0, 2.0, 1.0, 0.5, 0.5]
        >>> problem = Problem.from_data(X)
        >>> result, (report,) = train_and_compare_zipped(problem, TrainConfig(2), betas=1.0, sigma2s=0.5)
        >>> model = LinearVAE(latent_dim=2, sigma2=0.5).take_trained(result, 0, report, problem)
        >>> model.verdict_, model.transform(X).shape
        ('agrees', (200, 2))
        """
        W, mu, V, log_D = (np.asarray(a[index], dtype=np.float64) for a in result.params)
        spectrum = {
            "eigenvalues": np.asarray(problem.eigenvalues),
            "trace": float(problem.trace),
            "dim": int(problem.d),
            "n": int(problem.n),
        }
        self._set_fitted(W, mu, V, np.exp(log_D), float(result.sigma2[index]), report, spectrum)
        return self

    def _set_fitted(self, W, mu, V, D, sigma2: float, report: dict, spectrum: dict) -> None:
        self.components_ = W.T
        self.mean_ = mu
        self.encoder_ = (V, D)
        self.noise_variance_ = sigma2
        self.report_ = report
        self.converged_ = bool(report["converged"])
        self.gap_ = float(report["gap"])
        self.verdict_ = report["verdict"]
        self.active_dims_ = int(report["active_dims"])
        self.n_features_in_ = W.shape[0]
        self.spectrum_ = spectrum

    def fit_transform(self, X, y=None) -> np.ndarray:
        """``fit(X)``, then the posterior means of ``X`` (:meth:`transform`).

        >>> X = np.random.default_rng(0).normal(size=(200, 5)) * [3.0, 2.0, 1.0, 0.5, 0.5]
        >>> LinearVAE(latent_dim=2, sigma2=0.5).fit_transform(X).shape
        (200, 2)
        """
        return self.fit(X).transform(X)

    # -- using a fitted model --------------------------------------------------------------------
    def _fitted(self, X=None) -> np.ndarray | None:
        if not hasattr(self, "components_"):
            raise NotFittedError("this LinearVAE is not fitted yet; call fit(X) first")
        if X is None:
            return None
        X = _as_data(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but LinearVAE is expecting {self.n_features_in_} features as input; "
                "pass data of that width"
            )
        return X

    @property
    def params_(self) -> LinearVAEParams:
        """The parameters as the library's tuple (``W`` (d, k), ``mu``, ``V``, ``log D``).

        >>> X = np.random.default_rng(0).normal(size=(200, 5)) * [3.0, 2.0, 1.0, 0.5, 0.5]
        >>> model = LinearVAE(latent_dim=2, sigma2=0.5).fit(X)
        >>> [a.shape for a in model.params_]  # W (d, k), mu (d,), V (k, d), log D (k,)
        [(5, 2), (5,), (2, 5), (2,)]
        """
        self._fitted()
        V, D = self.encoder_
        return LinearVAEParams(self.components_.T, self.mean_, V, np.log(D))

    def transform(self, X) -> np.ndarray:
        """Posterior (encoder) means ``V (x - mu)``, (N, k).

        >>> X = np.random.default_rng(0).normal(size=(200, 5)) * [3.0, 2.0, 1.0, 0.5, 0.5]
        >>> model = LinearVAE(latent_dim=2, sigma2=0.5).fit(X)
        >>> model.transform(X[:2]).round(4)
        array([[ 0.2657, -0.0146],
               [ 0.5805,  1.379 ]])
        """
        X = self._fitted(X)
        return (X - self.mean_) @ self.encoder_[0].T

    def inverse_transform(self, Z) -> np.ndarray:
        """Decoder means ``W z + mu``, (N, d).

        >>> X = np.random.default_rng(0).normal(size=(200, 5)) * [3.0, 2.0, 1.0, 0.5, 0.5]
        >>> model = LinearVAE(latent_dim=2, sigma2=0.5).fit(X)
        >>> Z = model.transform(X[:2])
        >>> model.inverse_transform(Z).round(4)
        array([[ 0.3316, -0.2129,  0.025 , -0.0915,  0.0576],
               [ 1.013 ,  2.253 ,  0.2845, -0.152 ,  0.1309]])
        """
        self._fitted()
        return np.asarray(Z, dtype=np.float64) @ self.components_ + self.mean_

    def score_samples(self, X) -> np.ndarray:
        """The exact beta-ELBO of each row (nats): with ``m = V (x - mu)`` and ``r = x - mu - W m``,
        ``-d/2 log(2 pi sigma2) - (||r||^2 + tr(W^T W D)) / (2 sigma2) - beta KL(N(m, D) || N(0, I))``.

        >>> X = np.random.default_rng(0).normal(size=(200, 5)) * [3.0, 2.0, 1.0, 0.5, 0.5]
        >>> model = LinearVAE(latent_dim=2, sigma2=0.5).fit(X)
        >>> model.score_samples(X[:3]).round(4)
        array([ -5.729 ,  -7.4962, -11.3651])

        References: docs/theory.md (T3.1); Lucas et al. 2019, Section 3 (written per datapoint).
        """
        X = self._fitted(X)
        W, (V, D), sigma2 = self.components_.T, self.encoder_, self.noise_variance_
        m = (X - self.mean_) @ V.T
        residual = X - self.mean_ - m @ W.T
        expected_error = np.sum(residual**2, axis=1) + np.sum(np.sum(W**2, axis=0) * D)
        kl = 0.5 * np.sum(D + m**2 - 1.0 - np.log(D), axis=1)
        d = X.shape[1]
        return -0.5 * d * (LOG_2PI + math.log(sigma2)) - expected_error / (2.0 * sigma2) - self.beta * kl

    def score(self, X, y=None) -> float:
        """Mean of :meth:`score_samples`: nats per datapoint, as ``PCA.score``.

        >>> X = np.random.default_rng(0).normal(size=(200, 5)) * [3.0, 2.0, 1.0, 0.5, 0.5]
        >>> model = LinearVAE(latent_dim=2, sigma2=0.5).fit(X)
        >>> round(model.score(X), 6), round(model.closed_form().elbo, 6)  # at the optimum: the closed form's ELBO
        (-7.582551, -7.582551)
        """
        return float(np.mean(self.score_samples(X)))

    def log_likelihood(self, X) -> float:
        """The exact log marginal likelihood ``log N(x; mu, W W^T + sigma2 I)``, averaged over rows.

        >>> X = np.random.default_rng(0).normal(size=(200, 5)) * [3.0, 2.0, 1.0, 0.5, 0.5]
        >>> model = LinearVAE(latent_dim=2, sigma2=0.5).fit(X)
        >>> round(model.log_likelihood(X), 6)  # = score(X): at beta = 1 the optimum's bound is tight
        -7.582551
        """
        from linear_vae.data.moments import compute_moments
        from linear_vae.theory.ppca import log_marginal_likelihood

        X = self._fitted(X)
        moments = compute_moments(X)
        offset = moments.mean - self.mean_
        return float(log_marginal_likelihood(self.components_.T, self.noise_variance_, moments.cov, offset))

    def sample(self, n_samples: int = 1, seed: int = 0) -> np.ndarray:
        """``n_samples`` draws of ``x = W z + mu + sqrt(sigma2) eps``, ``z, eps`` standard normal.

        >>> X = np.random.default_rng(0).normal(size=(200, 5)) * [3.0, 2.0, 1.0, 0.5, 0.5]
        >>> model = LinearVAE(latent_dim=2, sigma2=0.5).fit(X)
        >>> model.sample(3, seed=0).shape
        (3, 5)
        """
        self._fitted()
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((n_samples, self.components_.shape[0]))
        noise = rng.standard_normal((n_samples, self.n_features_in_))
        return z @ self.components_ + self.mean_ + math.sqrt(self.noise_variance_) * noise

    def closed_form(self):
        """The closed-form optimum for the same ``latent_dim``, ``beta`` and ``sigma2`` (learned: its
        own optimum) on the training spectrum (:class:`linear_vae.theory.optimum.BetaElboOptimum`).

        >>> X = np.random.default_rng(0).normal(size=(200, 5)) * [3.0, 2.0, 1.0, 0.5, 0.5]
        >>> model = LinearVAE(latent_dim=2, sigma2=0.5).fit(X)
        >>> optimum = model.closed_form()
        >>> optimum.active_dims, round(optimum.elbo, 6)
        (2, -7.582551)
        """
        from linear_vae.theory.optimum import beta_elbo_optimum, learned_sigma2

        self._fitted()
        s = self.spectrum_
        k, totals = self.components_.shape[0], {"trace": s["trace"], "dim": s["dim"]}
        sigma2 = learned_sigma2(s["eigenvalues"], k, self.beta, **totals) if self.sigma2 is None else self.sigma2
        return beta_elbo_optimum(s["eigenvalues"], k, self.beta, sigma2, **totals)

    # -- saving ----------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the fitted model to ``path`` (``.npz``, atomically): parameters, settings, the
        training spectrum and the package version.

        >>> import tempfile
        >>> from pathlib import Path
        >>> X = np.random.default_rng(0).normal(size=(200, 5)) * [3.0, 2.0, 1.0, 0.5, 0.5]
        >>> model = LinearVAE(latent_dim=2, sigma2=0.5).fit(X)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     model.save(Path(folder) / "model.npz")
        ...     with np.load(Path(folder) / "model.npz") as archive:
        ...         sorted(archive)
        ['D', 'V', 'W', 'eigenvalues', 'header', 'mu']
        """
        import io

        import linear_vae

        self._fitted()
        V, D = self.encoder_
        header = {
            "format": SAVE_FORMAT,
            "linear_vae": linear_vae.__version__,
            "params": self.get_params(),
            "noise_variance": self.noise_variance_,
            "report": self.report_,
            "spectrum": {k: v for k, v in self.spectrum_.items() if k != "eigenvalues"},
        }
        buffer = io.BytesIO()
        np.savez(
            buffer,
            header=np.array(json.dumps(header, default=float)),
            W=self.components_.T,
            mu=self.mean_,
            V=V,
            D=D,
            eigenvalues=np.asarray(self.spectrum_["eigenvalues"]),
        )
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path) -> "LinearVAE":
        """A model written by :meth:`save`; it transforms and scores exactly as the saved one.

        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory()
        >>> path = Path(folder.name) / "model.npz"
        >>> X = np.random.default_rng(0).normal(size=(200, 5)) * [3.0, 2.0, 1.0, 0.5, 0.5]
        >>> LinearVAE(latent_dim=2, sigma2=0.5).fit(X).save(path)
        >>> loaded = LinearVAE.load(path)
        >>> loaded, round(loaded.score(X), 6), loaded.transform(X[:1]).round(4)
        (LinearVAE(sigma2=0.5), -7.582551, array([[ 0.2657, -0.0146]]))
        >>> folder.cleanup()
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no model file at {path}; pass a file that LinearVAE.save or `train --save-model` wrote")
        try:
            with np.load(path, allow_pickle=False) as archive:
                header = json.loads(str(archive["header"]))
                arrays = {key: archive[key] for key in ("W", "mu", "V", "D", "eigenvalues")}
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{path} is not a model saved by LinearVAE.save ({error})") from None
        if header.get("format") != SAVE_FORMAT:
            raise ValueError(f"{path} has model format {header.get('format')}, this version reads {SAVE_FORMAT}")
        model = cls(**header["params"])
        spectrum = {**header["spectrum"], "eigenvalues": arrays["eigenvalues"]}
        model._set_fitted(
            arrays["W"], arrays["mu"], arrays["V"], arrays["D"], header["noise_variance"], header["report"], spectrum
        )
        return model
