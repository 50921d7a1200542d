"""The persistent compilation cache of the command line (:mod:`linear_vae.compilation_cache`): where
it lives, and that it changes nothing but the time: a warm run gives bitwise the results of a cold
one, two processes can fill one folder at once, and an unusable folder or corrupt entries degrade
to compiling with one warning line.

The runs train with Adam (one small program each); :func:`test_a_warm_newton_run_compiles_almost_nothing`
checks that Newton's programs are cached too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from linear_vae import compilation_cache

TRAIN = ["train", "--data", "synthetic", "-k", "2", "--sigma2", "1", "--optimizer", "adam", "--steps", "100"]
TIMINGS = {"seconds", "sweep_seconds", "compile_seconds"}


def start(cache, tmp_path: Path) -> subprocess.Popen:
    """``linear-vae train ... --json`` in a fresh process with ``--compilation-cache cache``."""
    argv = [sys.executable, "-m", "linear_vae.cli", *TRAIN, "--json", "--quiet", "--compilation-cache", str(cache)]
    return subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[dict, list[str]]:
    """The report without its timings, and the lines on stderr (the process must exit 0)."""
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    report = json.loads(out)
    return {key: value for key, value in report.items() if key not in TIMINGS}, err.splitlines()


def entries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """Two processes started at once on one empty cache folder: ``(folder, [report, report])``."""
    folder = tmp_path_factory.mktemp("cache")
    work = tmp_path_factory.mktemp("work")
    processes = [start(folder, work), start(folder, work)]
    results = [finish(p) for p in processes]
    for _, err in results:
        assert err == []
    return folder, [report for report, _ in results]


def test_the_folder_is_the_option_else_the_variable_else_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(compilation_cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compilation_cache.resolve() == tmp_path / "xdg" / "linear-vae"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compilation_cache.resolve() == tmp_path / "home" / ".cache" / "linear-vae"
    monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / "env"))
    assert compilation_cache.resolve() == tmp_path / "env"
    assert compilation_cache.resolve(str(tmp_path / "option")) == tmp_path / "option"
    assert compilation_cache.resolve("off") is None
    monkeypatch.setenv(compilation_cache.ENV, "off")
    assert compilation_cache.resolve() is None


def test_help_shows_the_folder_in_use(monkeypatch, tmp_path, capsys):
    from linear_vae.cli import main

    monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / "here"))
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    # argparse wraps long paths at their hyphens: compare without the white space
    assert f"now{tmp_path / 'here'}" in "".join(capsys.readouterr().out.split())


def test_two_processes_fill_one_folder_at_once_and_agree(cold):
    folder, (first, second) = cold
    assert first == second
    assert entries(folder), "nothing was cached"


def test_a_warm_run_gives_bitwise_the_cold_results(cold, tmp_path):
    folder, (first, _) = cold
    warm, err = finish(start(folder, tmp_path))
    assert err == []
    assert warm == first  # every number of the report, bit for bit (JSON keeps float64 exactly)


def test_corrupt_entries_degrade_to_compiling_with_one_warning(cold, tmp_path):
    folder, (first, _) = cold
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for entry in entries(folder):  # the compiled programs garbled, JAX's bookkeeping files kept
        garbled = entry.name.endswith("-cache")
        (corrupt / entry.name).write_bytes(b"not a compiled program" if garbled else entry.read_bytes())
    report, err = finish(start(corrupt, tmp_path))
    assert report == first
    assert err == [
        f"linear-vae: warning: entries of the compilation cache {corrupt} could not be used; compiling instead"
    ]


def test_an_unusable_folder_degrades_to_compiling_with_one_warning(cold, tmp_path):
    _, (first, _) = cold
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    report, err = finish(start(a_file / "cache", tmp_path))
    assert report == first
    assert len(err) == 1 and err[0].startswith(
        f"linear-vae: warning: the compilation cache {a_file / 'cache'} cannot be used"
    )
    assert err[0].endswith("compiling every program")


COUNT_CACHE_EVENTS = """
import collections, json, sys
import jax
events = collections.Counter()
jax.monitoring.register_event_listener(lambda event, **kwargs: events.update([event]))
from linear_vae.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps({"requests": events["/jax/compilation_cache/compile_requests_use_cache"],
                  "hits": events["/jax/compilation_cache/cache_hits"]}), file=sys.stderr)
"""


def test_a_warm_newton_run_compiles_almost_nothing(tmp_path):
    """A Newton ``train`` run twice on one cache folder: the second process finds every program it
    asks the cache for (JAX's own event counts), Newton's training loop and convergence test
    included, since none of them calls back into Python."""
    argv = [sys.executable, "-c", COUNT_CACHE_EVENTS, "train", "--data", "synthetic", "-k", "2", "--sigma2", "1",
            "--json", "--quiet", "--compilation-cache", str(tmp_path / "cache")]  # fmt: skip
    counts = []
    for _ in range(2):
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        counts.append(json.loads(done.stderr.strip().splitlines()[-1]))
    cold, warm = counts
    assert cold["requests"] > 0 and cold["hits"] == 0
    assert warm["requests"] == cold["requests"] and warm["hits"] == warm["requests"], counts
