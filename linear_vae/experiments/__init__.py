"""The paper's posterior-collapse figures, one module each (see :mod:`linear_vae.experiments.runner`)."""

#: Experiment modules in figure order (here, so that the command line lists them without importing
#: matplotlib; :mod:`linear_vae.experiments.runner` re-exports it).
EXPERIMENTS = (
    "collapse_threshold",
    "kl_per_dim",
    "training_curves",
    "training_curves_paper",
    "landscape",
    "landscape_paper",
    "latent_dim",
    "latent_dim_paper",
    "escape_time",
    "identifiability",
    "collapse_fraction",
    "stationary_points",
    "encoders",
    "metric_calibration",
    "rate_distortion",
    "cvae_collapse",
    "hvae_collapse",
    "conditional_information",
    "deep_vae",
    "deep_vae_fashion",
)
