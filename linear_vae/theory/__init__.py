"""The closed form: pPCA, the beta-ELBO, its optimum and collapse thresholds, the collapse metrics
(exact, and their sampling estimators), escape times, and the conditional and hierarchical models.
Imports only :mod:`linear_vae.data` and :mod:`linear_vae.core`."""
