"""linear-vae: posterior collapse in the linear VAE, in closed form and by gradient training.

The ``linear-vae`` command line.

Every command reads data with the same options (``--data``, ``--n``, ``--subset-seed``,
``--key``), and ``--sigma2 S`` fixes the observation variance while omitting it means sigma2 is
learned.  Errors in the input print one line on stderr and exit with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import sys

from linear_vae import __version__
from linear_vae.core import io


class UsageError(Exception):
    """A command-line usage error (argparse), reported in one line with exit status 2.

    >>> build_parser().parse_args(["train", "--steps"])
    Traceback (most recent call last):
    ...
    linear_vae.cli.UsageError: argument --steps: expected one argument (see 'linear-vae train --help')
    """


class _Parser(argparse.ArgumentParser):
    """Every (sub)command's parser: one-line errors, and no abbreviated options (an abbreviation
    that names one option today is ambiguous once another option shares its prefix)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line, no usage dump
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        default="mnist",
        help="'mnist' (the shipped 5,000 digits), 'fashion_mnist' (5,000 shipped Fashion-MNIST images), "
        "'synthetic' (known spectrum), or a .npy, .npz, .csv or IDX file (default: mnist)",
    )
    group.add_argument("--n", type=int, default=None, help="use a seeded random subset of N samples (default: all)")
    group.add_argument("--subset-seed", type=int, default=0, help="seed of the --n subset (default: 0)")
    group.add_argument("--key", default=None, help="array name inside an .npz file with several arrays")
    group.add_argument("--data-seed", type=int, default=0, help="seed of --data synthetic (default: 0)")


# Each option shared by several commands is declared once, here.


def _add_latent_dim(parser, default: int | None = None) -> None:
    """``--latent-dim/-k``: required, or with ``default``."""
    if default is None:
        parser.add_argument("--latent-dim", "-k", type=int, required=True, help="number of latent dimensions K")
    else:
        parser.add_argument(
            "--latent-dim", "-k", type=int, default=default, help=f"number of latent dimensions K (default {default})"
        )


def _add_output_options(parser, what: str, progress: bool = True) -> None:
    """``--json`` (print ``what`` on stdout) and, for commands that train, ``--quiet``."""
    parser.add_argument("--json", action="store_true", help=f"print {what} on stdout")
    if progress:
        parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _add_seed(parser, what: str) -> None:
    parser.add_argument("--seed", type=int, default=0, help=f"seed of {what} (default 0)")


def _add_optimizer_options(
    parser, optimizer_default: str | None, optimizer_help: str, lr_default: float, steps_help: str = ""
) -> None:
    """``--optimizer``, ``--steps`` and ``--lr``, with the trainer's choices and per-optimiser defaults."""
    from linear_vae.training.solvers import OPTIMIZERS, SOLVERS

    per_optimizer = "; ".join(f"{name} {solver.default_steps}" for name, solver in SOLVERS.items())
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=optimizer_default, help=optimizer_help)
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"the most optimiser steps{steps_help}; a converged run stops sooner (default: {per_optimizer})",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"peak learning rate of adam and sgd; newton takes none and refuses it (default {lr_default:g})",
    )


def _add_model_options(parser: argparse.ArgumentParser, latent_required: bool = True) -> None:
    group = parser.add_argument_group("model")
    if latent_required:
        _add_latent_dim(group)
    else:
        group.add_argument("--latent-dim", "-k", type=int, default=None, help="number of latent dimensions K")
    group.add_argument("--sigma2", type=float, default=None, help="fixed observation-noise variance (omit to learn it)")
    group.add_argument("--beta", type=float, default=1.0, help="KL weight beta (default: 1)")


def _add_pair_options(parser: argparse.ArgumentParser) -> None:
    """The conditional and hierarchical models of docs/theory.md (T17), and where their ``x`` comes from."""
    from linear_vae.analysis import MODELS
    from linear_vae.data.conditioning import SPLITS

    group = parser.add_argument_group("conditional and hierarchical models (docs/theory.md (T17))")
    group.add_argument(
        "--model",
        choices=MODELS,
        default="vae",
        help="vae: the linear VAE (with --condition or --split: predicting y from x; with --prior-variance: "
        "a scaled prior); cvae: the linear conditional VAE; hvae: the two-level linear HVAE (default: vae)",
    )
    group.add_argument("--condition", metavar="FILE", default=None, help="x, one row per row of --data (y)")
    group.add_argument(
        "--split",
        choices=SPLITS,
        default=None,
        help="x and y from each image of --data: x the bottom-left quarter (quarter) or the left half (half), "
        "y the rest",
    )
    group.add_argument("--prior-variance", type=float, default=1.0, help="prior variance eta_enc^2 (default: 1)")
    group.add_argument("--latent-dims", type=int, nargs=2, metavar=("D1", "D2"), help="hvae: latents of z1 and z2")
    group.add_argument("--beta1", type=float, default=1.0, help="hvae: KL weight of the z1 level (default: 1)")
    group.add_argument("--beta2", type=float, default=1.0, help="hvae: KL weight of the z2 level (default: 1)")
    group.add_argument("--z1-variance", type=float, default=None, help="hvae: the fixed variance sigma1^2 of q(z1|x)")
    group.add_argument(
        "--z2-variance",
        type=float,
        default=None,
        help="hvae: fix the variance of q(z2|z1) to this times I (default: learned, a diagonal Sigma2)",
    )
    group.add_argument("--no-bias", action="store_true", help="a model without biases: raw (uncentred) second moments")


def _pairs(args, dataset):
    """``(x, y)`` of ``--condition``/``--split`` (``x = y`` = the data when neither is given)."""
    from linear_vae.data.conditioning import image_split
    from linear_vae.data.datasets import load_data

    if args.condition and args.split:
        raise ValueError("give --condition FILE or --split, not both")
    if args.split:
        return image_split(dataset.X, args.split)
    if args.condition:
        if args.n is not None:
            raise ValueError("--n subsets --data only; with --condition, pass files holding the same rows instead")
        return load_data(args.condition, key=args.key).X, dataset.X
    return dataset.X, dataset.X


def _load(args):
    from linear_vae.data.datasets import load_data

    return load_data(args.data, n=args.n, subset_seed=args.subset_seed, key=args.key, synthetic_seed=args.data_seed)


def _format_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _fmt_list(values, fmt="{:.4g}", limit=12) -> str:
    shown = ", ".join(fmt.format(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def cmd_analyze(args) -> int:
    """Closed-form optimum of the beta-ELBO and the collapse thresholds of every latent dimension.

    >>> import os, tempfile
    >>> import numpy as np
    >>> data = os.path.join(tempfile.mkdtemp(), "x.npy")  # 200 samples of variances about 9.3, 4 and 0.9
    >>> np.save(data, np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
    >>> cmd_analyze(build_parser().parse_args(["analyze", "--data", data, "-k", "2", "--sigma2", "5"]))  # doctest: +ELLIPSIS
    data                       .../x.npy: n = 200, d = 3
    latent dimensions K        2
    beta                       1
    sigma2                     5 (fixed)
    top eigenvalues            [9.259, 3.988, 0.9396]
    optimal beta-ELBO          -6.471852 nats per datapoint
    MLL at the optimum         -6.471852 nats per datapoint
    active dimensions          1 of 2 (lambda_i > beta sigma2: the collapse thresholds)
    collapse thresholds beta*  [1.852, 0.7977]
    KL per dimension (nats)    [0.3081, 0]
    nearest threshold          |lambda - beta sigma2| / (beta sigma2) = 0.202
    rate                       0.308088 nats per datapoint (= I(x; z) for Gaussian data)
    distortion                 9.92791 (expected squared error, squared data units)
    active units               1 of 2 (Var_x E_q[z_i] > 0.01, ...)
    0
    """
    from linear_vae.analysis import analyze

    dataset = _load(args)
    if args.model != "vae" or args.condition or args.split or args.prior_variance != 1.0:
        return _analyze_pairs(args, dataset)
    if args.latent_dim is None:
        raise ValueError("analyze needs --latent-dim K")
    report = analyze(dataset.X, args.latent_dim, beta=args.beta, sigma2=args.sigma2).to_dict()
    if args.json:
        print(io.dumps(report))
        return 0
    sigma2_note = "learned (closed form)" if report["sigma2_learned"] else "fixed"
    print(
        _format_table(
            [
                ("data", f"{dataset.name}: n = {report['n']}, d = {report['d']}"),
                ("latent dimensions K", str(report["latent_dim"])),
                ("beta", f"{report['beta']:.6g}"),
                ("sigma2", f"{report['sigma2']:.6g} ({sigma2_note})"),
                ("top eigenvalues", _fmt_list(report["eigenvalues"])),
                ("optimal beta-ELBO", f"{report['elbo']:.6f} nats per datapoint"),
                ("MLL at the optimum", f"{report['mll']:.6f} nats per datapoint"),
                (
                    "active dimensions",
                    f"{report['active_dims']} of {report['latent_dim']} (lambda_i > beta sigma2: the collapse thresholds)",
                ),
                ("collapse thresholds beta*", _fmt_list(report["collapse_thresholds"])),
                ("KL per dimension (nats)", _fmt_list(report["kl_per_dim"])),
                (
                    "nearest threshold",
                    f"|lambda - beta sigma2| / (beta sigma2) = {report['nearest_threshold_distance']:.3g}",
                ),
                ("rate", f"{report['rate']:.6f} nats per datapoint (= I(x; z) for Gaussian data)"),
                ("distortion", f"{report['distortion']:.6g} (expected squared error, squared data units)"),
                (
                    "active units",
                    f"{report['active_units']} of {report['latent_dim']} (Var_x E_q[z_i] > 0.01, i.e. lambda_i > beta "
                    "sigma2 / 0.99: can be fewer than the active dimensions; docs/theory.md (T5.3))",
                ),
            ]
        )
    )
    return 0


def _analyze_pairs(args, dataset) -> int:
    """``analyze --model``: the closed form of a model of y given x (:func:`linear_vae.analysis.analyze_pairs`)."""
    from linear_vae.analysis import analyze_pairs

    if args.sigma2 is None:
        raise ValueError(f"--model {args.model} needs a fixed --sigma2 (the decoder variance eta_dec^2)")
    X, Y = _pairs(args, dataset)
    report = analyze_pairs(
        X,
        Y,
        args.model,
        args.sigma2,
        latent_dim=args.latent_dim,
        latent_dims=args.latent_dims,
        beta=args.beta,
        beta1=args.beta1,
        beta2=args.beta2,
        prior_variance=args.prior_variance,
        z1_variance=args.z1_variance,
        z2_variance=args.z2_variance,
        bias=not args.no_bias,
    )
    if args.json:
        print(io.dumps(report))
        return 0
    rows = [
        ("data", f"{dataset.name}: n = {report['n']} pairs, d_x = {report['d_x']}, d_y = {report['d_y']}"),
        ("model", f"{report['model']} ({'with' if report['bias'] else 'without'} biases)"),
        ("decoder variance sigma2", f"{report['sigma2']:.6g}; prior variance {report['prior_variance']:.6g}"),
        ("spectrum", f"{_fmt_list(report['spectrum'])} ({report['spectrum_units']})"),
        ("optimal beta-ELBO", f"{report['elbo']:.6f} nats per datapoint"),
    ]
    if report["model"] == "hvae":
        d1, d2 = report["latent_dims"]
        z2_rule = (
            "all: the z2 level models z1's fixed noise"
            if report["z2_models_z1_noise"]
            else f"spectrum > {report['z2_threshold']:.4g}"
        )
        rows += [
            ("z1 thresholds", _fmt_list(report["z1_thresholds"])),
            ("active z1 modes", f"{report['active_z1']} of {d1} (spectrum above its z1 threshold)"),
            ("active z2 modes", f"{report['active_z2']} of {d2} ({z2_rule})"),
        ]
    else:
        rows += [
            ("threshold beta sigma2", f"{report['threshold']:.6g}"),
            (
                "active dimensions",
                f"{report['active_dims']} of {report['latent_dim']} (spectrum > beta sigma2, whatever the prior variance)",
            ),
            ("KL per dimension (nats)", _fmt_list(report["kl_per_dim"])),
        ]
    print(_format_table(rows))
    return 0


def _parse_values(text: str, name: str, cast=float) -> list:
    """``a,b,c`` (a list) or ``START:STOP:NUM`` (NUM log-spaced values, for betas and sigma2s)."""
    import numpy as np

    problem = f"cannot read {name} {text!r}; give a list a,b,c or a log-spaced range START:STOP:NUM with NUM >= 1"
    try:
        if ":" in text:
            start, stop, num = text.split(":")
            values = [cast(v) for v in np.geomspace(float(start), float(stop), int(num))]
        else:
            values = [cast(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(problem) from None
    if not values:
        raise ValueError(problem)
    return values


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    from linear_vae.data.problem import BASES
    from linear_vae.training.train import OBJECTIVES, SCHEDULES, TrainConfig

    defaults = TrainConfig(latent_dim=1)
    group = parser.add_argument_group("training")
    group.add_argument(
        "--objective",
        choices=OBJECTIVES[:2],
        default=defaults.objective,
        help="exact: the ELBO in closed form from the data covariance (full batch, no sampling); "
        "stochastic: a Monte-Carlo estimate of it on minibatches, as a VAE is usually trained "
        f"(default {defaults.objective})",
    )
    _add_optimizer_options(
        group,
        None,
        "newton: trust-region Newton on the projected objective, converges to "
        "round-off and stops when converged (exact objective only); adam, sgd: optax gradient "
        "methods (default: newton for the exact objective, adam for the stochastic one)",
        defaults.learning_rate,
    )
    group.add_argument(
        "--log-every",
        type=int,
        default=None,
        help="record metrics every this many steps (default: 1 for newton, 100 otherwise)",
    )
    group.add_argument(
        "--gain-tol",
        type=float,
        default=defaults.gain_tol,
        help="converged: the predicted gain of a Newton step is below this many nats per "
        f"datapoint and no ascent direction is left (default {defaults.gain_tol:g})",
    )
    group.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=defaults.schedule,
        help=f"learning-rate schedule of adam and sgd (default {defaults.schedule})",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help=f"minibatch size of the stochastic objective (default {defaults.batch_size})",
    )
    group.add_argument(
        "--mc-samples",
        type=int,
        default=defaults.mc_samples,
        help="samples of z drawn per datapoint to estimate the ELBO; used by the stochastic "
        f"objective only (default {defaults.mc_samples})",
    )
    group.add_argument(
        "--basis",
        choices=BASES,
        default=None,
        help="train on the data as given or rotated into the eigenbasis of S (the same "
        "ELBO, cheaper steps; Adam's trajectory differs, Newton's does not; results are "
        "reported in the data basis) (default: eigen for newton, data otherwise)",
    )
    group.add_argument(
        "--init-scale",
        type=float,
        default=defaults.init_scale,
        help=f"standard deviation of the initial decoder weights (default {defaults.init_scale})",
    )
    group.add_argument(
        "--sigma2-init",
        type=float,
        default=None,
        help="initial sigma2 when it is learned (default: the mean variance tr(S)/d)",
    )


def _train_config(args, latent_dim: int, learn_sigma2: bool):
    """The :class:`~linear_vae.training.train.TrainConfig` the training options describe."""
    from linear_vae.training.train import TrainConfig

    optimizer = args.optimizer or ("newton" if args.objective == "exact" else "adam")
    return TrainConfig(
        latent_dim=latent_dim,
        steps=args.steps,
        log_every=args.log_every,
        objective=args.objective,
        optimizer=optimizer,
        learning_rate=_learning_rate(args, optimizer, TrainConfig._field_defaults["learning_rate"]),
        schedule=args.schedule,
        batch_size=args.batch_size,
        mc_samples=args.mc_samples,
        learn_sigma2=learn_sigma2,
        init_scale=args.init_scale,
        basis=args.basis,
        gain_tol=args.gain_tol,
    )


def _learning_rate(args, optimizer: str, default: float) -> float:
    """``--lr``, or ``default`` when it is not given; refused with a solver that has no step size
    (Newton; it would otherwise be accepted and silently ignored)."""
    from linear_vae.training.solvers import resolve

    if args.lr is None:
        return default
    if not resolve(optimizer).has_step_size:
        raise ValueError(
            f"--lr sets the step size of adam and sgd, and {optimizer} takes none; drop --lr or choose --optimizer adam"
        )
    return args.lr


def _default_sigma2_init(args, problem) -> float:
    from linear_vae.core.validation import check_positive

    if args.sigma2_init is not None:
        return check_positive("sigma2_init", args.sigma2_init)
    return problem.trace / problem.d  # the mean variance


def _progress(args, label: str):
    """A :class:`linear_vae.core.progress.Progress` on stderr for the task ``label`` (silent with ``--quiet``)."""
    from linear_vae.core.progress import Progress

    progress = Progress(enabled=not args.quiet)
    progress.task(label)
    return progress


def _run_sweep(args, latent_dim, betas, sigma2s, seeds, learn_sigma2, on_divergence: str):
    """Train the Cartesian product of ``betas x sigma2s x seeds`` in one compiled call and compare."""

    from linear_vae.core.validation import check_positive
    from linear_vae.data.problem import Problem
    from linear_vae.verification.compare import train_and_compare_grid

    for beta in betas:
        check_positive("beta", beta)
    if args.sigma2_init is not None and not learn_sigma2:
        fixed = "--sigma2" if args.command == "train" else "--sigma2s"
        raise ValueError(f"--sigma2-init sets the start of a learned sigma2, but {fixed} fixes it; drop one of them")
    problem = Problem.from_dataset(_load(args))
    if learn_sigma2:
        sigma2s, start = None, _default_sigma2_init(args, problem)
    else:
        sigma2s, start = [check_positive("sigma2", s) for s in sigma2s], None
    n_configs = len(betas) * len(seeds) * (1 if learn_sigma2 else len(sigma2s))
    progress = _progress(args, args.command if n_configs == 1 else f"{args.command} ({n_configs} configurations)")
    try:
        result, reports = train_and_compare_grid(
            problem,
            _train_config(args, latent_dim, learn_sigma2),
            betas,
            sigma2s,
            seeds,
            sigma2_init=start,
            progress=progress,
            on_divergence=on_divergence,
        )
    finally:
        progress.close()
    return problem, result, reports


def _print_reports(reports: list[dict], as_json: bool, single: bool = False) -> None:
    from linear_vae.verification.compare import ROUNDOFF_GAP

    if as_json:
        print(io.dumps(reports[0] if single else reports))
        return
    header = (
        f"{'beta':>10} {'sigma2':>10} {'seed':>4} {'ELBO':>14} {'optimum':>14} {'gap':>10} {'decoder':>10} "
        f"{'inference':>10} {'active':>6} {'pred':>4} {'angle':>7} {'dist':>9} {'steps':>6}  verdict"
    )
    print(header)
    for r in reports:
        print(
            f"{_cell(r['beta'], 10, '.4g')} {_cell(r['sigma2'], 10, '.4g')} {r['seed']:>4} "
            f"{_cell(r['elbo'], 14, '.6f')} {_cell(r['optimal_elbo'], 14, '.6f')} {_gap_cell(r, 'gap')} "
            f"{_gap_cell(r, 'decoder_gap')} {_gap_cell(r, 'inference_gap')} {r['active_dims']:>6} "
            f"{r['predicted_active_dims']:>4} {_cell(r['max_principal_angle_deg'], 7, '.2f')} "
            f"{_cell(r['nearest_threshold_distance'], 9, '.3f')} {r['steps_used']:>6}  {r['verdict']}"
            + (f" ({'; '.join(r['reasons'])})" if r["reasons"] else "")
        )
    first = reports[0]
    print(
        f"(nats per datapoint; gap = optimum - trained = decoder + inference; angle in degrees; dist = "
        f"|lambda - beta sigma2| / (beta sigma2); {first['optimizer']}, steps used of at most {first['steps']}; "
        f"{first['sweep_seconds']:.2f} s training, {first['compile_seconds']:.2f} s compilation; "
        f"{ROUNDOFF_GAP}: below zero by float64 round-off only, the JSON keeps the signed value)"
    )
    print(
        "verdict: agrees = converged by the trainer's own test and on the closed form; not converged = "
        "the trainer cannot vouch for its end point; diverged = the optimiser blew up (lower --lr); "
        "disagrees = converged yet off the closed form"
    )


def _gap_cell(report: dict, key: str) -> str:
    """A gap column: ``~ 0`` where the gap is below zero by round-off only (:func:`linear_vae.verification.compare.gap_text`)."""
    from linear_vae.verification.compare import gap_text

    gap = report[key]
    return _cell(gap, 10, ".2e") if gap is None else gap_text(gap, report["optimal_elbo"])


def _cell(value, width: int, spec: str) -> str:
    """``value`` in ``spec`` right-aligned in exactly ``width`` characters, switching to scientific
    notation with fewer digits when it would not fit (a runaway 1e+246 cannot break the table;
    the JSON keeps full precision).  ``None`` is shown as ``-``."""
    if value is None:
        return f"{'-':>{width}}"
    text = format(value, spec)
    for digits in range(6, -1, -1):
        if len(text) <= width:
            break
        text = format(value, f".{digits}e")
    return f"{text:>{width}}"


def _uses_pairs(args) -> bool:
    """Whether a training command trains a model of y given x (``--model cvae|hvae``)."""
    if args.model == "vae":
        if args.condition or args.split or args.prior_variance != 1.0:
            raise ValueError(
                f"{args.command} --model vae trains the linear VAE of the data alone; for y given x "
                "(--condition, --split) use --model cvae or hvae, and `linear-vae analyze` for the scaled prior"
            )
        return False
    return True


def _pair_settings(args) -> tuple:
    """``(moments, settings)`` of ``--model cvae|hvae``: the joint moments of ``(x, y)`` and the keyword
    arguments of :func:`linear_vae.verification.model_verify.train_and_compare` the options give."""
    from linear_vae.data.joint_moments import JointMoments
    from linear_vae.training.model_objective import MODEL_SOLVERS

    optimizer = args.optimizer or "newton"
    if optimizer not in MODEL_SOLVERS:
        raise ValueError(f"--model {args.model} trains with --optimizer {' or '.join(MODEL_SOLVERS)}, not {optimizer}")
    for option, value, default in (
        ("--objective", getattr(args, "objective", "exact"), "exact"),
        ("--sigma2-init", getattr(args, "sigma2_init", None), None),
        ("--save-model", getattr(args, "save_model", None), None),
    ):
        if value != default:
            raise ValueError(f"{option} is for --model vae; --model {args.model} trains its exact objective")
    X, Y = _pairs(args, _load(args))
    moments = JointMoments.from_data(X, Y, centred=not args.no_bias)
    settings = {
        "prior_variance": args.prior_variance,
        "optimizer": optimizer,
        "iterations": args.steps,
        "learning_rate": 1e-2 if args.lr is None else args.lr,
    }
    if args.lr is not None and not MODEL_SOLVERS[optimizer].has_step_size:
        raise ValueError(
            f"--lr sets the step size of adam, and {optimizer} takes none; drop --lr or choose --optimizer adam"
        )
    if args.model == "cvae":
        if args.latent_dim is None:
            raise ValueError("--model cvae needs --latent-dim")
        settings["latent_dim"] = args.latent_dim
    else:
        if args.latent_dims is None or args.z1_variance is None:
            raise ValueError("--model hvae needs --latent-dims D1 D2 and --z1-variance")
        settings |= {
            "latent_dims": tuple(args.latent_dims),
            "beta1": args.beta1,
            "beta2": args.beta2,
            "z1_variance": args.z1_variance,
            "z2_variance": args.z2_variance,
        }
    return moments, settings


def _model_report_text(report: dict) -> str:
    """One configuration of ``--model cvae|hvae``: its settings, the per-mode table and its verdict."""
    if report["model"] == "cvae":
        setting = f"K = {report['latent_dim']}, beta = {report['beta']:.6g}"
        header = f"{'mode':>4} {'spectrum':>11} {'threshold':>11} {'active':>6} {'trained':>7} {'KL':>10} " + (
            f"{'trained KL':>10} {'gain':>10} {'trained':>10}"
        )
        rows = [
            f"{i + 1:>4} {m['spectrum']:>11.5g} {m['threshold']:>11.5g} {'yes' if m['active'] else 'no':>6} "
            f"{'yes' if m['trained_active'] else 'no':>7} {m['kl']:>10.4g} {m['trained_kl']:>10.4g} "
            f"{m['decoder_gain']:>10.5g} {m['trained_decoder_gain']:>10.5g}"
            for i, m in enumerate(report["modes"])
        ]
        legend = (
            "spectrum: eigenvalues theta_i of S = B - C^T A^+ C (variance units); active iff theta_i > beta sigma2; "
            "KL: nats per datapoint; gain: singular value of U1 at the optimum"
        )
    else:
        d1, d2 = report["latent_dims"]
        fixed = report["z2_variance"]
        setting = (
            f"d1 = {d1}, d2 = {d2}, beta1 = {report['beta1']:.6g}, beta2 = {report['beta2']:.6g}, "
            f"sigma1^2 = {report['z1_variance']:.6g}, Sigma2 " + ("learned" if fixed is None else f"= {fixed:.6g} I")
        )
        z2_rule = (
            "every z2 mode is active (the z2 level models z1's fixed noise)"
            if report["z2_models_z1_noise"]
            else f"a z2 mode is active iff theta_i^2 > {report['z2_threshold']:.5g}"
        )
        header = (
            f"{'mode':>4} {'spectrum':>11} {'z1 thresh':>11} {'z1':>4} {'trained':>7} {'a_i':>10} {'trained':>10} "
            f"{'z2':>4} {'trained':>7} {'z2 KL':>10} {'trained':>10}"
        )
        rows = []
        for i, m in enumerate(report["modes"]):
            row = (
                f"{i + 1:>4} {m['spectrum']:>11.5g} {m['threshold']:>11.5g} {'yes' if m['active'] else 'no':>4} "
                f"{'yes' if m['trained_active'] else 'no':>7} {m['z1_variance']:>10.5g} {m['trained_z1_variance']:>10.5g}"
            )
            if "kl" in m:
                row += (
                    f" {'yes' if m['z2_active'] else 'no':>4} {'yes' if m['trained_z2_active'] else 'no':>7} "
                    f"{m['kl']:>10.4g} {m['trained_kl']:>10.4g}"
                )
            rows.append(row)
        legend = (
            "spectrum: theta_i^2, squared singular values of C^T A^{-1/2} (variance units); a z1 mode is active iff "
            f"theta_i^2 > its z1 threshold; {z2_rule}; a_i: the variance of z1 along mode i; KL: nats per datapoint"
        )
    from linear_vae.verification.compare import gap_text

    lines = [
        f"{report['model']}: {setting}, sigma2 = {report['sigma2']:.6g}, prior variance {report['prior_variance']:.6g}, "
        f"{'with' if report['bias'] else 'without'} biases; {report['optimizer']}, {report['steps_used']} iterations",
        header,
        *rows,
        legend,
        f"beta-ELBO trained {report['elbo']:.9f}, optimal {report['optimal_elbo']:.9f} nats per datapoint; gap "
        f"{gap_text(report['gap'], report['optimal_elbo']).strip()}; converged: {'yes' if report['converged'] else 'no'}; "
        f"active {report['active_dims']}, predicted {report['predicted_active_dims']}; nearest threshold "
        f"{report['nearest_threshold_distance']:.3g} ({report['kind']})",
        f"{report['status'].upper()}" + (f": {'; '.join(report['reasons'])}" if report["reasons"] else ""),
    ]
    return "\n".join(lines)


def _train_pairs(args, configurations: list[dict], moments) -> list[dict]:
    from linear_vae.verification.model_verify import train_and_compare

    if args.sigma2 is None:
        raise ValueError(f"--model {args.model} needs a fixed --sigma2 (the decoder variance eta_dec^2)")
    progress = _progress(args, f"{args.command} --model {args.model} ({len(configurations)} configurations)")
    try:
        reports = []
        for i, settings in enumerate(configurations):
            reports.append(train_and_compare(moments, args.model, args.sigma2, **settings))
            progress(i + 1, len(configurations))
    finally:
        progress.close()
    return reports


def _print_model_reports(reports: list[dict], as_json: bool, verdict: str | None = None) -> None:
    if as_json:
        print(
            io.dumps(reports[0] if len(reports) == 1 and verdict is None else {"verdict": verdict, "configs": reports})
        )
        return
    print("\n\n".join(_model_report_text(r) for r in reports))
    if verdict is not None:
        summary = {
            "agrees": "AGREES: every configuration converged and matches the closed form",
            "disagrees": "DISAGREES WITH THE THEORY: a converged configuration contradicts the closed form",
            "not converged": "NOT CONVERGED: a configuration did not pass the convergence test; nothing contradicts "
            "the theory (raise --steps)",
        }
        print(summary[verdict])


def cmd_train(args) -> int:
    """Train one linear VAE by gradient ascent and compare it with the closed form.

    >>> import os, tempfile
    >>> import numpy as np
    >>> data = os.path.join(tempfile.mkdtemp(), "x.npy")  # 200 samples of variances about 9.3, 4 and 0.9
    >>> np.save(data, np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
    >>> args = build_parser().parse_args(["train", "--data", data, "-k", "2", "--sigma2", "0.5", "--quiet"])
    >>> cmd_train(args)  # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
    beta sigma2 seed ELBO optimum gap ... verdict
    1 0.5 0 -6.154357 -6.154357 ~ 0 ... agrees
    (nats per datapoint; ...
    0
    """
    if _uses_pairs(args):
        moments, settings = _pair_settings(args)
        settings |= {"beta": args.beta, "seed": args.seed}
        _print_model_reports(_train_pairs(args, [settings], moments), args.json)
        return 0
    if args.latent_dim is None:
        raise ValueError("train needs --latent-dim K")
    learn = args.sigma2 is None
    if args.save_model is not None:
        io.check_output_file(args.save_model, "--save-model")  # before training, not after
    # A diverged run raises DivergenceError (a ValueError): one line naming the step, exit 2.
    problem, result, reports = _run_sweep(
        args, args.latent_dim, [args.beta], [args.sigma2], [args.seed], learn, "raise"
    )
    if args.save_model is not None:
        from linear_vae.estimator import LinearVAE

        settings = {"latent_dim": args.latent_dim, "beta": args.beta, "sigma2": args.sigma2, "seed": args.seed}
        settings |= {"sigma2_init": args.sigma2_init, "optimizer": args.optimizer or "newton", "steps": args.steps}
        LinearVAE(**settings, learning_rate=args.lr).take_trained(result, 0, reports[0], problem).save(args.save_model)
    _print_reports(reports, args.json, single=True)
    return 0


def cmd_score(args) -> int:
    """Score a saved model (train --save-model) on data: the ELBO, the exact log-likelihood, active
    units and the collapse metrics, per datapoint.

    >>> import os, tempfile
    >>> import numpy as np
    >>> data = os.path.join(tempfile.mkdtemp(), "x.npy")  # 200 samples of variances about 9.3, 4 and 0.9
    >>> np.save(data, np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
    >>> import contextlib, json
    >>> import io as text_io
    >>> def run(argv):  # the command's exit status and its --json report
    ...     with contextlib.redirect_stdout(text_io.StringIO()) as out:
    ...         status = main([*argv, "--json", "--compilation-cache", "off"])
    ...     return status, json.loads(out.getvalue())
    >>> model = os.path.join(os.path.dirname(data), "model.npz")
    >>> run(["train", "--data", data, "-k", "2", "--sigma2", "0.5", "--quiet", "--save-model", model])[0]
    0
    >>> status, score = run(["score", "--model", model, "--data", data])
    >>> status, round(score["elbo"], 6), round(score["log_likelihood"], 6), score["active_units"]  # ELBO = MLL at the optimum
    (0, -6.154357, -6.154357, 2)
    """
    from linear_vae.data.moments import compute_moments
    from linear_vae.estimator import LinearVAE
    from linear_vae.theory.metrics import collapse_metrics

    model = LinearVAE.load(args.model)
    dataset = _load(args)
    X = dataset.X
    if X.shape[1] != model.n_features_in_:
        raise ValueError(
            f"{dataset.name} has {X.shape[1]} features, the model {model.n_features_in_}; score it on data of that width"
        )
    moments = compute_moments(X)
    outcome = {
        "model": str(args.model),
        "data": dataset.name,
        "n": int(X.shape[0]),
        "d": int(X.shape[1]),
        "latent_dim": int(model.components_.shape[0]),
        "beta": float(model.beta),
        "sigma2": model.noise_variance_,
        "elbo": model.score(X),
        "log_likelihood": model.log_likelihood(X),
        "training_elbo": model.report_["elbo"],
        **collapse_metrics(model.params_, moments.mean, moments.cov),
    }
    if args.json:
        print(io.dumps(outcome))
        return 0
    rows = [
        (
            "model",
            f"{args.model} (K = {outcome['latent_dim']}, beta = {outcome['beta']:g}, sigma2 = {outcome['sigma2']:.6g})",
        ),
        ("data", f"{dataset.name}: N = {outcome['n']}, d = {outcome['d']}"),
        ("ELBO", f"{outcome['elbo']:.6f} nats per datapoint (on its training data: {outcome['training_elbo']:.6f})"),
        ("log-likelihood", f"{outcome['log_likelihood']:.6f} nats per datapoint (exact)"),
        ("rate", f"{outcome['rate']:.6g} nats"),
        ("distortion", f"{outcome['distortion']:.6g}"),
        ("active units", f"{outcome['active_units']} of {outcome['latent_dim']} (Var_x E_q[z_i] > 0.01)"),
    ]
    print(_format_table(rows))
    return 0


def cmd_sweep(args) -> int:
    """Train a sweep over betas, sigma2s and seeds in one compiled call and compare each with the closed form.

    >>> import os, tempfile
    >>> import numpy as np
    >>> data = os.path.join(tempfile.mkdtemp(), "x.npy")  # 200 samples of variances about 9.3, 4 and 0.9
    >>> np.save(data, np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
    >>> import contextlib, json
    >>> import io as text_io
    >>> def run(argv):  # the command's exit status and its --json report
    ...     with contextlib.redirect_stdout(text_io.StringIO()) as out:
    ...         status = main([*argv, "--json", "--compilation-cache", "off"])
    ...     return status, json.loads(out.getvalue())
    >>> status, reports = run(["sweep", "--data", data, "-k", "2", "--betas", "1", "--sigma2s", "0.5", "--quiet"])
    >>> status, [(r["sigma2"], r["verdict"], r["active_dims"], abs(r["gap"]) < 1e-9) for r in reports]
    (0, [(0.5, 'agrees', 2, True)])
    """
    betas = _parse_values(args.betas, "--betas")
    seeds = _parse_values(args.seeds, "--seeds", int)
    learn = args.sigma2s is None
    sigma2s = [None] if learn else _parse_values(args.sigma2s, "--sigma2s")
    if args.save_params and not args.json:
        raise ValueError("--save-params adds each configuration's parameters to the JSON output; add --json")
    if _uses_pairs(args):
        return _sweep_pairs(args, betas, sigma2s, seeds)
    if args.latent_dim is None:
        raise ValueError("sweep needs --latent-dim K")
    _, result, reports = _run_sweep(args, args.latent_dim, betas, sigma2s, seeds, learn, "report")
    if args.save_params:
        import numpy as np

        for i, report in enumerate(reports):
            W, mu, V, log_D = (np.asarray(a[i]).tolist() for a in result.params)
            report["params"] = {"W": W, "mu": mu, "V": V, "log_D": log_D, "sigma2": float(result.sigma2[i])}
    _print_reports(reports, args.json)
    diverged = [r for r in reports if r["diverged"]]
    if diverged:
        first = diverged[0]
        print(
            f"linear-vae: error: {len(diverged)} of {len(reports)} configurations diverged (first: beta = "
            f"{first['beta']:.6g}, sigma2 = {first['sigma2']:.6g}, seed = {first['seed']}: {first['divergence']}); "
            "lower --lr",
            file=sys.stderr,
        )
        return 2
    return 0


def _sweep_pairs(args, betas, sigma2s, seeds) -> int:
    """``sweep --model cvae|hvae``: every ``--betas`` (beta of the CVAE, beta2 of the HVAE) x ``--sigma2s`` x ``--seeds``."""
    if args.save_params:
        raise ValueError("--save-params is for --model vae")
    if sigma2s == [None]:
        raise ValueError(f"--model {args.model} needs fixed --sigma2s (the decoder variance eta_dec^2)")
    moments, settings = _pair_settings(args)
    name = "beta" if args.model == "cvae" else "beta2"
    reports = []
    for sigma2 in sigma2s:
        args.sigma2 = sigma2
        configurations = [settings | {name: beta, "seed": seed} for beta in betas for seed in seeds]
        reports += _train_pairs(args, configurations, moments)
    if args.json:
        print(io.dumps(reports))
    else:
        _print_model_reports(reports, False)
    return 0


def _verify_pairs(args) -> int:
    """``verify --model cvae|hvae``: the configurations of :func:`linear_vae.verification.model_verify.plan`, each trained and judged."""
    import numpy as np

    from linear_vae.theory.conditional import cvae_optimum
    from linear_vae.verification.model_verify import overall_verdict, plan

    moments, settings = _pair_settings(args)
    if args.sigma2 is None:
        if args.model == "hvae":
            raise ValueError("--model hvae needs a fixed --sigma2 (the decoder variance eta_dec^2)")
        spectrum = cvae_optimum(moments, settings["latent_dim"], 1.0, 1.0).modes.spectrum
        args.sigma2 = float(np.median(spectrum))
        if not args.sigma2 > 0:
            raise ValueError(
                "the median residual variance is 0, so no sigma2 can be chosen from the spectrum; fix --sigma2"
            )
    configurations = [c | {"seed": args.seed} for c in plan(moments, args.model, args.sigma2, **settings)]
    reports = _train_pairs(args, configurations, moments)
    verdict = overall_verdict(reports)
    _print_model_reports(reports, args.json, verdict)
    return 0 if verdict == "agrees" else 1


def cmd_verify(args) -> int:
    """Train a sweep chosen from the data's spectrum and check it against the closed form (exit 1 when it
    disagrees or did not converge).

    Its options are checked before anything is trained (a whole run: the example of
    :func:`linear_vae.verification.verify.run_verification`); an error names the option to change:

    >>> import os, tempfile
    >>> import numpy as np
    >>> data = os.path.join(tempfile.mkdtemp(), "x.npy")  # 200 samples of variances about 9.3, 4 and 0.9
    >>> np.save(data, np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
    >>> import contextlib, sys
    >>> with contextlib.redirect_stderr(sys.stdout):
    ...     main(["verify", "--data", data, "-k", "2", "--gap-tol", "-1", "--compilation-cache", "off"])
    linear-vae: error: --gap-tol must be finite and > 0, got -1.0; pass a positive number
    2
    """
    from linear_vae.verification.verify import VERIFY_DEFAULTS, run_verification

    if _uses_pairs(args):
        return _verify_pairs(args)
    learning_rate = _learning_rate(args, args.optimizer, VERIFY_DEFAULTS["learning_rate"])
    dataset = _load(args)
    progress = _progress(args, "verify")
    try:
        outcome = run_verification(
            dataset,
            args.latent_dim,
            sigma2=args.sigma2,
            optimizer=args.optimizer,
            steps=args.steps,
            learning_rate=learning_rate,
            gap_tolerance=args.gap_tol,
            angle_tolerance_deg=args.angle_tol,
            seed=args.seed,
            progress=progress,
        )
    finally:
        progress.close()
    if args.json:
        print(io.dumps(outcome))
    else:
        print(for_the_command_line(outcome["table"], "verify"))  # "raise `steps`" -> "raise --steps"
    return 0 if outcome["passed"] else 1


def _is_full_budget(path: str) -> bool:
    """Whether ``path`` is an experiment's JSON written with the full budget (``"quick": false``)."""
    import json

    try:
        with open(path) as f:
            return json.load(f).get("quick") is False
    except (OSError, ValueError, AttributeError):
        return False


def cmd_reproduce(args) -> int:
    """Regenerate the paper's figures (PNG) with the numbers behind each (JSON).

    The output folder is checked before any experiment runs (a run takes minutes; ``linear-vae
    reproduce --quick`` is the short one):

    >>> import contextlib, sys
    >>> with contextlib.redirect_stderr(sys.stdout):
    ...     main(["reproduce", "--quick", "--out", "/dev/null", "--compilation-cache", "off"])
    linear-vae: error: cannot write figures to /dev/null: it exists and is not a folder; pass --out a writable folder
    2
    """
    import os
    import time

    out_arg = args.out or ("figures-quick" if args.quick else "figures")
    out = io.check_output_dir(out_arg)  # an unusable --out fails before anything is loaded or run
    folder = os.path.join(out_arg, "")  # as given, with one trailing slash

    from linear_vae import interrupts
    from linear_vae.core.progress import Progress
    from linear_vae.experiments.runner import EXPERIMENTS, run_experiment

    names = args.only or list(EXPERIMENTS)  # argparse's choices have refused unknown names
    if args.quick and not args.force:
        full = [name for name in names if _is_full_budget(os.path.join(out, f"{name}.json"))]
        if full:
            raise ValueError(
                f"{folder} holds the full-budget results of {', '.join(full)}, which a --quick run would "
                "replace; write elsewhere with --out, or pass --force"
            )
    from linear_vae.experiments.runner import check_finished_parts, unresolved_checkpoints

    if args.finished_parts:
        check_finished_parts(names, out, quick=args.quick, resume=args.resume)
    if not (args.resume or args.force or args.finished_parts):
        pending = unresolved_checkpoints(names, out, args.quick)
        if pending:  # refuse before anything runs, not after the experiments ahead of it
            raise ValueError(
                f"{', '.join(str(p) for p in pending)} holds the training state of an earlier run; continue it with "
                "--resume, or start over with --force"
            )
    total_start = time.perf_counter()
    written_figures, finished = 0, 0

    def status() -> str:  # what the "interrupted" line reports (linear_vae.interrupts)
        return f"{finished} of {len(names)} experiments ({written_figures} figure(s)) written to {folder}"

    interrupts.set_status(status)
    with io.folder_lock(out, "linear-vae reproduce"):
        progress = Progress(enabled=not args.quiet)
        for index, name in enumerate(names, 1):
            start = time.perf_counter()
            progress.context(f"[{index}/{len(names)}]")
            progress.task(name)
            progress.phase("loading data")
            payload = run_experiment(
                name,
                out_dir=out,
                quick=args.quick,
                progress=progress,
                resume=args.resume,
                restart=args.force,
                finished_parts=args.finished_parts,
            )
            progress.close()
            finished += 1
            written_figures += len(payload["figures"])
            progress.context("")
            written = ", ".join(payload["figures"] + [f"{name}.json"])
            progress.message(
                f"[{index}/{len(names)}] {name}: wrote {written} in {folder} ({time.perf_counter() - start:.1f} s)"
            )
    interrupts.set_status(None)
    progress.message(
        f"reproduce: {written_figures} figure(s) from {len(names)} experiment(s) written to {folder} "
        f"in {time.perf_counter() - total_start:.1f} s"
        + (" (quick budget: see the note on each figure)" if args.quick else "")
    )
    return 0


def _add_cache_option(parser) -> None:
    """``--compilation-cache DIR|off`` (:mod:`linear_vae.compilation_cache`), showing the folder in use."""
    from linear_vae import compilation_cache

    folder = compilation_cache.resolve()
    parser.add_argument(
        "--compilation-cache",
        metavar="DIR|off",
        default=None,
        help=f"keep compiled programs in DIR between runs, or 'off' (default: ${compilation_cache.ENV}, else "
        f"{compilation_cache.default_folder()}; now {folder or 'off'})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``linear-vae`` parser: one subcommand per ``cmd_*`` function, each with its options.

    >>> args = build_parser().parse_args(["train", "-k", "2", "--sigma2", "0.5"])
    >>> args.command, args.func is cmd_train, args.latent_dim, args.sigma2, args.data, args.optimizer  # None: the default, newton
    ('train', True, 2, 0.5, 'mnist', None)
    """
    from linear_vae import compilation_cache

    parser = _Parser(
        prog="linear-vae",
        description=__doc__.splitlines()[0],
        epilog=f"Compiled programs are kept between runs in {compilation_cache.resolve() or '(off)'}: "
        f"set {compilation_cache.ENV}=DIR or off, or give a command --compilation-cache DIR|off.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    analyze = sub.add_parser("analyze", help=cmd_analyze.__doc__, description=cmd_analyze.__doc__)
    _add_data_options(analyze)
    _add_model_options(analyze, latent_required=False)
    _add_pair_options(analyze)
    _add_output_options(analyze, "one JSON object", progress=False)
    _add_cache_option(analyze)
    analyze.set_defaults(func=cmd_analyze)

    train = sub.add_parser("train", help=cmd_train.__doc__, description=cmd_train.__doc__)
    _add_data_options(train)
    _add_model_options(train, latent_required=False)
    _add_pair_options(train)
    _add_training_options(train)
    _add_seed(train, "the initialisation and sampling")
    train.add_argument(
        "--save-model",
        metavar="PATH",
        default=None,
        help="write the trained model to PATH (.npz: parameters, settings, training spectrum); "
        "score it later with `linear-vae score --model PATH`, or LinearVAE.load(PATH) from Python",
    )
    _add_output_options(train, "one JSON object")
    _add_cache_option(train)
    train.set_defaults(func=cmd_train)

    score = sub.add_parser("score", help=cmd_score.__doc__, description=cmd_score.__doc__)
    score.add_argument("--model", required=True, metavar="PATH", help="a model written by `train --save-model`")
    _add_data_options(score)
    _add_output_options(score, "one JSON object", progress=False)
    _add_cache_option(score)
    score.set_defaults(func=cmd_score)

    sweep = sub.add_parser("sweep", help=cmd_sweep.__doc__, description=cmd_sweep.__doc__)
    _add_data_options(sweep)
    sweep.add_argument("--latent-dim", "-k", type=int, default=None, help="number of latent dimensions K")
    # --beta and --sigma2 are accepted too (one value is a list of one), as every command that
    # trains takes them.
    sweep.add_argument(
        "--betas", "--beta", default="1", help="KL weights: a,b,c or START:STOP:NUM (log-spaced) (default 1)"
    )
    sweep.add_argument(
        "--sigma2s",
        "--sigma2",
        default=None,
        help="fixed observation variances: a,b,c or START:STOP:NUM (omit to learn sigma2)",
    )
    sweep.add_argument("--seeds", default="0", help="seeds: a,b,c (default 0)")
    sweep.add_argument(
        "--save-params",
        action="store_true",
        help="with --json, keep each configuration's trained parameters in its report (W as d x K, mu, V as "
        "K x d, log_D, sigma2)",
    )
    _add_pair_options(sweep)
    _add_training_options(sweep)
    _add_output_options(sweep, "one JSON array")
    _add_cache_option(sweep)
    sweep.set_defaults(func=cmd_sweep)

    verify = sub.add_parser("verify", help=cmd_verify.__doc__, description=cmd_verify.__doc__)
    _add_data_options(verify)
    from linear_vae.verification.verify import LEARNED_STEPS_FACTOR, VERIFY_DEFAULTS

    _add_latent_dim(verify, VERIFY_DEFAULTS["latent_dim"])
    verify.add_argument(
        "--sigma2", type=float, default=None, help="fixed sigma2 of the beta sweep (default: chosen from the spectrum)"
    )
    _add_optimizer_options(
        verify,
        VERIFY_DEFAULTS["optimizer"],
        f"optimiser of the sweep (default {VERIFY_DEFAULTS['optimizer']})",
        VERIFY_DEFAULTS["learning_rate"],
        f" per configuration, the learned-sigma2 run gets {LEARNED_STEPS_FACTOR} times as many with adam and sgd",
    )
    verify.add_argument(
        "--gap-tol",
        type=float,
        default=VERIFY_DEFAULTS["gap_tolerance"],
        help="a configuration away from every collapse threshold passes only if its trained ELBO is "
        "at most this far below the closed-form optimum, in nats per datapoint "
        f"(default {VERIFY_DEFAULTS['gap_tolerance']:g})",
    )
    verify.add_argument(
        "--angle-tol",
        type=float,
        default=VERIFY_DEFAULTS["angle_tolerance_deg"],
        help="a configuration away from every collapse threshold passes only if the largest "
        "principal angle between its trained active columns and the top eigenvectors is at "
        f"most this many degrees (default {VERIFY_DEFAULTS['angle_tolerance_deg']:g})",
    )
    _add_pair_options(verify)
    _add_seed(verify, "the random initial decoder of every configuration")
    _add_output_options(verify, "one JSON object")
    _add_cache_option(verify)
    verify.set_defaults(func=cmd_verify)

    reproduce = sub.add_parser("reproduce", help=cmd_reproduce.__doc__, description=cmd_reproduce.__doc__)
    reproduce.add_argument(
        "--quick", action="store_true", help="small budgets (CI and smoke runs); every figure then says so on the image"
    )
    from linear_vae.experiments import EXPERIMENTS  # the names only: no matplotlib at start-up

    reproduce.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=EXPERIMENTS,
        help="run only these experiments, of: " + ", ".join(EXPERIMENTS) + " (default: all)",
    )
    reproduce.add_argument(
        "--out",
        default=None,
        help="output folder, created if needed and checked before anything runs "
        "(default: figures, or figures-quick with --quick)",
    )
    reproduce.add_argument(
        "--force",
        action="store_true",
        help="let a --quick run replace full-budget results in --out, and let a resumable experiment "
        "(deep_vae, deep_vae_fashion) start over, deleting its checkpoint (both refused otherwise)",
    )
    reproduce.add_argument(
        "--resume",
        action="store_true",
        help="continue a resumable experiment (deep_vae, deep_vae_fashion) from the checkpoint it keeps in --out "
        "(NAME.checkpoint.pkl, written every few minutes); a finished one is measured and drawn again",
    )
    reproduce.add_argument(
        "--finished-parts",
        action="store_true",
        help="for a study trained in parts (deep_vae, deep_vae_fashion): train nothing, and write its JSON and "
        "figures from the parts finished in --out (NAME.part-PART.json); the figures name the missing parts",
    )
    reproduce.add_argument("--quiet", action="store_true", help="no progress on stderr")
    _add_cache_option(reproduce)
    reproduce.set_defaults(func=cmd_reproduce)
    return parser


#: The option that sets each library parameter.  Library error messages name parameters in
#: backquotes (:mod:`linear_vae.core.validation`); the CLI shows the option instead.
OPTIONS = {
    "latent_dim": "--latent-dim",
    "beta": "--beta",
    "sigma2": "--sigma2",
    "sigma2_init": "--sigma2-init",
    "learning_rate": "--lr",
    "init_scale": "--init-scale",
    "gain_tol": "--gain-tol",
    "steps": "--steps",
    "log_every": "--log-every",
    "batch_size": "--batch-size",
    "mc_samples": "--mc-samples",
    "objective": "--objective",
    "optimizer": "--optimizer",
    "basis": "--basis",
    "n": "--n",
    "source": "--data",
    "key": "--key",
    "gap_tolerance": "--gap-tol",
    "angle_tolerance_deg": "--angle-tol",
    "decoder_variance": "--sigma2",
    "prior_variance": "--prior-variance",
    "beta1": "--beta1",
    "beta2": "--beta2",
    "z1_variance": "--z1-variance",
    "z2_variance": "--z2-variance",
}
#: Where a command's option differs (a sweep takes lists).
COMMAND_OPTIONS = {"sweep": {"beta": "--betas", "sigma2": "--sigma2s"}}


def for_the_command_line(message: str, command: str | None = None) -> str:
    """``message`` with each backquoted parameter name replaced by the option that sets it.

    >>> for_the_command_line("`learning_rate` must be positive; raise `steps` or `unknown`")
    '--lr must be positive; raise --steps or unknown'
    """
    import re

    options = {**OPTIONS, **COMMAND_OPTIONS.get(command, {})}
    return re.sub(r"`(\w+)`", lambda match: options.get(match.group(1), match.group(1)), str(message))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``linear-vae`` console script; returns the exit status.

    >>> import os, tempfile
    >>> import numpy as np
    >>> data = os.path.join(tempfile.mkdtemp(), "x.npy")  # 200 samples of variances about 9.3, 4 and 0.9
    >>> np.save(data, np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 2.0, 1.0])
    >>> import contextlib, json
    >>> import io as text_io
    >>> def run(argv):  # the command's exit status and its --json report
    ...     with contextlib.redirect_stdout(text_io.StringIO()) as out:
    ...         status = main([*argv, "--json", "--compilation-cache", "off"])
    ...     return status, json.loads(out.getvalue())
    >>> status, report = run(["train", "--data", data, "-k", "2", "--sigma2", "0.5", "--quiet"])
    >>> status, report["verdict"], round(report["elbo"], 6), round(report["optimal_elbo"], 6), report["active_dims"]
    (0, 'agrees', -6.154357, -6.154357, 2)
    >>> import sys
    >>> with contextlib.redirect_stderr(sys.stdout):  # errors: one line on stderr, exit status 2
    ...     main(["analyze", "--data", data, "-k", "4", "--sigma2", "0.5"])  # doctest: +ELLIPSIS
    linear-vae: error: ...
    2
    """
    command = None
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        from linear_vae import compilation_cache

        compilation_cache.enable(compilation_cache.resolve(args.compilation_cache))
        return args.func(args)
    except (UsageError, ValueError) as error:
        print(f"linear-vae: error: {for_the_command_line(error, command)}", file=sys.stderr)
        return 2


def script_main(name: str) -> None:
    """Entry point of ``experiments/<name>.py``: ``python experiments/<name>.py [--quick] [--out DIR]``,
    with Ctrl-C and SIGTERM handled as for the ``linear-vae`` command.

    >>> import contextlib, signal
    >>> from unittest import mock
    >>> before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    >>> argv = ["experiments/kl_per_dim.py", "--quick", "--out", "/dev/null"]  # an unusable --out: refused at once
    >>> with mock.patch.object(sys, "argv", argv), contextlib.redirect_stderr(sys.stdout):
    ...     script_main("kl_per_dim")
    Traceback (most recent call last):
    ...
    SystemExit: 2
    >>> for sig, handler in before.items():  # put back the handlers it installed
    ...     _ = signal.signal(sig, handler)
    """
    from linear_vae.interrupts import run_guarded

    argv = ["reproduce", "--only", name, *sys.argv[1:]]
    sys.exit(run_guarded(lambda: main(argv)))


if __name__ == "__main__":
    sys.exit(main())
