"""Speed benchmarks of the linear-VAE trainer (not part of the installed package).

Run from the repository root as modules, e.g. ``python -m benchmarks.run [--quick]``:

* :mod:`benchmarks.run`: the entry point of the full comparison (results.json, results.md);
* :mod:`benchmarks.measure`: every measurement of that comparison;
* :mod:`benchmarks.baselines`: the PyTorch baselines it runs;
* :mod:`benchmarks.bookkeeping`: recorded gaps and clocks turned into times to accuracy;
* :mod:`benchmarks.report`: results.json turned into ratios, targets and results.md;
* :mod:`benchmarks.trainer`, :mod:`benchmarks.conditioning`, :mod:`benchmarks.analyze_scale`:
  standalone scripts (also runnable as ``python benchmarks/<name>.py``).
"""
