"""Interrupt `linear-vae reproduce --quick` at random moments and record what happens.

    python scripts/interrupt_stress.py --runs 24 --seed 1 --out interrupt_stress.json

Each run sends SIGINT or SIGTERM (chosen at random) after a random 0.05-33 s, then records the
exit status, the seconds from the signal to the exit, whether stderr held a traceback or an
"Exception ignored" message, any temporary file left in the output folder, and the last stderr
line.  The expected outcome of every run: 130 or 143, no traceback, nothing left, one
"interrupted" line.
"""

import argparse
import json
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=24, help="number of interrupted runs (default 24)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the delays and signals (default 1)")
    parser.add_argument("--out", default="interrupt_stress.json", help="JSON file of the results")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    command = shutil.which("linear-vae")
    rows = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as folder:
            delay, sig = rng.uniform(0.05, 33.0), rng.choice([signal.SIGINT, signal.SIGTERM])
            process = subprocess.Popen(
                [command, "reproduce", "--quick", "--out", folder],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(delay)
            sent = time.monotonic()
            process.send_signal(sig)
            err = process.communicate(timeout=120)[1]
            rows.append(
                {
                    "delay_s": round(delay, 2),
                    "signal": sig.name,
                    "exit_status": process.returncode,
                    "seconds_to_exit": round(time.monotonic() - sent, 3),
                    "traceback": "Traceback" in err or "Exception ignored" in err,
                    "temporary_files_left": [p.name for p in Path(folder).glob(".*")],
                    "last_line": err.strip().splitlines()[-1] if err.strip() else "",
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    expected = {"SIGINT": 130, "SIGTERM": 143}
    summary = {
        "runs": len(rows),
        "all_exit_statuses_as_expected": all(r["exit_status"] == expected[r["signal"]] for r in rows),
        "tracebacks": sum(r["traceback"] for r in rows),
        "runs_leaving_temporary_files": sum(bool(r["temporary_files_left"]) for r in rows),
        "max_seconds_to_exit": max(r["seconds_to_exit"] for r in rows),
        "median_seconds_to_exit": sorted(r["seconds_to_exit"] for r in rows)[len(rows) // 2],
    }
    Path(args.out).write_text(json.dumps({"summary": summary, "runs": rows}, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
