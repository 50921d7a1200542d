"""Console entry point of ``linear-vae``.

It lives outside the package on purpose: importing anything from :mod:`linear_vae` imports JAX
(about half a second, more on a cold disk), and a Ctrl-C in that window would otherwise print a
``KeyboardInterrupt`` traceback.  Here SIGINT and SIGTERM are only recorded until the package is
imported; :func:`linear_vae.interrupts.run_guarded` then takes over and stops at once if one came.
"""

import signal
import sys


def main() -> int:
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    from linear_vae.cli import main as cli_main
    from linear_vae.interrupts import run_guarded

    argv = sys.argv[1:]
    return run_guarded(lambda: cli_main(argv), received)


if __name__ == "__main__":
    sys.exit(main())
