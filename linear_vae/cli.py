"""The ``linear-vae`` command line.

Every command reads data with the same options (``--data``, ``--n``, ``--subset-seed``,
``--key``), and ``--sigma2 S`` fixes the observation variance while omitting it means sigma2 is
learned.  Errors in the input print one line on stderr and exit with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import sys

from linear_vae import io


class UsageError(Exception):
    """A command-line usage error (argparse), reported in one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", default="mnist",
                       help="'mnist' (the shipped 5,000 digits), 'synthetic' (known spectrum), or a "
                            ".npy, .npz, .csv or IDX file (default: mnist)")
    group.add_argument("--n", type=int, default=None,
                       help="use a seeded random subset of N samples (default: all)")
    group.add_argument("--subset-seed", type=int, default=0, help="seed of the --n subset (default: 0)")
    group.add_argument("--key", default=None, help="array name inside an .npz file with several arrays")
    group.add_argument("--data-seed", type=int, default=0, help="seed of --data synthetic (default: 0)")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--latent-dim", "-k", type=int, required=True, help="number of latent dimensions K")
    group.add_argument("--sigma2", type=float, default=None,
                       help="fixed observation-noise variance (omit to learn it)")
    group.add_argument("--beta", type=float, default=1.0, help="KL weight beta (default: 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _load(args):
    from linear_vae.datasets import load_data

    return load_data(args.data, n=args.n, subset_seed=args.subset_seed, key=args.key,
                     synthetic_seed=args.data_seed)


def _format_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _fmt_list(values, fmt="{:.4g}", limit=12) -> str:
    shown = ", ".join(fmt.format(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def cmd_analyze(args) -> int:
    """Closed-form optimum of the beta-ELBO and the collapse thresholds of every latent dimension."""
    from linear_vae.analysis import analyze

    dataset = _load(args)
    report = analyze(dataset.X, args.latent_dim, beta=args.beta, sigma2=args.sigma2).to_dict()
    if args.json:
        print(io.dumps(report))
        return 0
    sigma2_note = "learned (closed form)" if report["sigma2_learned"] else "fixed"
    print(_format_table([
        ("data", f"{dataset.name}: n = {report['n']}, d = {report['d']}"),
        ("latent dimensions K", str(report["latent_dim"])),
        ("beta", f"{report['beta']:.6g}"),
        ("sigma2", f"{report['sigma2']:.6g} ({sigma2_note})"),
        ("top eigenvalues", _fmt_list(report["eigenvalues"])),
        ("optimal beta-ELBO", f"{report['elbo']:.6f} nats per datapoint"),
        ("MLL at the optimum", f"{report['mll']:.6f} nats per datapoint"),
        ("active dimensions", f"{report['active_dims']} of {report['latent_dim']}"),
        ("collapse thresholds beta*", _fmt_list(report["collapse_thresholds"])),
        ("KL per dimension (nats)", _fmt_list(report["kl_per_dim"])),
        ("nearest threshold", f"|lambda - beta sigma2| / (beta sigma2) = {report['nearest_threshold_distance']:.3g}"),
    ]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="linear-vae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    analyze = sub.add_parser("analyze", help=cmd_analyze.__doc__, description=cmd_analyze.__doc__)
    _add_data_options(analyze)
    _add_model_options(analyze)
    analyze.set_defaults(func=cmd_analyze)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``linear-vae`` console script; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UsageError, ValueError) as error:
        print(f"linear-vae: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
