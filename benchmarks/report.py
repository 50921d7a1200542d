"""The report: a results JSON turned into times to accuracy, ratios, targets and notes
(:func:`finalize`, from the JSON alone) and the markdown table (:func:`markdown`).

``python -m benchmarks.run --report-only`` redoes both from ``benchmarks/results.json`` and
rewrites ``benchmarks/results.md``; no JAX computation, no measurement.
"""

from __future__ import annotations

import numpy as np

from linear_vae.core.io import atomic_write_bytes, atomic_write_json

from .bookkeeping import TOLS

#: Targets of the Newton optimiser (see ``finalize``).
NEWTON_SPEEDUP_TARGET = 5.0  # time to 1e-5: Adam eigenbasis / Newton
NEWTON_GOAL_1E6_S = 20.0  # whole sweep to 1e-6, compilation included
HARD_CASE_GOAL_S = 10.0  # training seconds per hard case


def write_report(res: dict, out: str, md: str) -> None:
    """Add ratios, targets and notes (:func:`finalize`), write the JSON and the markdown table
    atomically, and print the table."""
    finalize(res)
    atomic_write_json(out, res)
    table = markdown(res)
    atomic_write_bytes(md, table.encode())
    print(table)


METHODS = ("ours_newton", "ours_sweep_data", "ours_sweep_eigen", "loop", "a", "b", "c")
ADAM_SWEEPS = {"ours_sweep_data": "sweep_data", "ours_sweep_eigen": "sweep_eigen"}


def tolerance_keys(res: dict) -> list[str]:
    """The tolerances a result holds, as keys ("0.01", "1e-05", ...)."""
    return [f"{tol:g}" for tol in res["problem"].get("tolerances_nats", TOLS)]


def methods(res: dict) -> list[str]:
    """The methods a result holds (Newton only in results from this version of the runner on)."""
    return [m for m in METHODS if m != "ours_newton" or res.get("sweep_newton") is not None]


def time_to_accuracy(res: dict, name: str, key: str):
    """``{"seconds", "at_least"}`` for method ``name`` to reach tolerance ``key`` on every
    configuration, or ``None`` where nothing can be said ((c) short of it, or no PyTorch).

    ``at_least`` marks a lower bound: the method spent that long (measured or projected) and some
    configuration had still not reached the tolerance at the end of the whole schedule (Newton:
    when it stopped, converged by its own test or at its iteration limit; ``why`` says which).
    """
    steps = res["optimiser"]["steps"]
    if name == "ours_newton":
        sweep = res.get("sweep_newton")
        if sweep is None:
            return None
        hit = sweep["time_to_accuracy"].get(key)
        if hit is not None:
            return {"seconds": hit["seconds"], "at_least": False}
        stop = "every configuration converged" if sweep["all_converged"] else "iteration limit"
        return {
            "seconds": sweep["compile_seconds"] + sweep["train_seconds"],
            "at_least": True,
            "why": f"not reached; stopped after {sweep['iterations_run']} iterations: {stop}",
        }
    if name in ADAM_SWEEPS:
        sweep = res[ADAM_SWEEPS[name]]
        hit = sweep["time_to_accuracy"].get(key)
        if hit is not None:
            return {"seconds": hit["seconds"], "at_least": False}
        return {"seconds": sweep["compile_seconds"] + sweep["train_seconds"], "at_least": True}
    if name == "loop":  # sequential: each configuration for the steps the identical sweep needed
        loop = res["python_loop_train_single"]
        needed = res["sweep_data"]["steps_needed_per_config"][key]
        seconds = (
            loop["compile_seconds"]
            + sum(steps if s is None else s for s in needed) * loop["seconds_per_run_median"] / steps
        )
        return {"seconds": seconds, "at_least": any(s is None for s in needed)}
    if res.get("torch") is None:
        return None
    v = res["torch"][name]["tolerances"][key]
    if name == "c":
        n_cfg = len(res["problem"]["betas"])
        return {"seconds": v["total_seconds"], "at_least": False} if v["configs_measured"] == n_cfg else None
    return {"seconds": v["total_seconds"], "at_least": v["configs_never_within_tol_in_ours"] > 0}


def target(value, met: bool, unit: str = "") -> dict:
    """A target's measured value and whether it is met."""
    return {"value": value, "unit": unit, "met": bool(met)}


def newton_targets(res: dict, times: dict, ratios: dict) -> dict:
    """The Newton targets: 1e-6 on every MNIST configuration, 1e-5 at least 5x sooner than Adam's
    eigenbasis sweep of the same run, the whole sweep to 1e-6 within 20 s (compilation included),
    and every hard case trained within 10 s."""
    nw = res["sweep_newton"]
    out = {}
    reached = nw["time_to_accuracy"].get("1e-06") is not None
    out["Newton reaches 1e-6 on every MNIST configuration (best worst gap)"] = target(
        nw["time_to_accuracy"]["best_worst_gap"]["gap"], reached, " nats"
    )
    r = ratios.get("ours_newton", {}).get("1e-05", {}).get("ours_sweep_eigen")
    out[f"time to 1e-5: Adam eigenbasis / Newton, same run (target >= {NEWTON_SPEEDUP_TARGET:g}x)"] = (
        None
        if r is None
        else {**r, "met": True if r["ratio"] >= NEWTON_SPEEDUP_TARGET else (None if r["at_least"] else False)}
    )
    t6 = times["1e-06"]["ours_newton"]
    out[f"goal: Newton, whole sweep to 1e-6 <= {NEWTON_GOAL_1E6_S:g} s (compilation included)"] = target(
        t6["seconds"], not t6["at_least"] and t6["seconds"] <= NEWTON_GOAL_1E6_S, " s"
    )
    hit = nw["time_to_accuracy"].get("1e-06")
    out[f"goal: Newton, whole sweep to 1e-6 <= {NEWTON_GOAL_1E6_S:g} s (training alone)"] = target(
        None if hit is None else hit["train_seconds"],
        hit is not None and hit["train_seconds"] <= NEWTON_GOAL_1E6_S,
        " s",
    )
    cases = (res.get("hard_cases") or {}).get("cases") or []
    if cases:
        ok = [c for c in cases if "error" not in c]
        slowest = max((c["train_seconds"] for c in ok), default=None)
        out[f"goal: every hard case trains in <= {HARD_CASE_GOAL_S:g} s (slowest)"] = target(
            slowest, len(ok) == len(cases) and slowest <= HARD_CASE_GOAL_S, " s"
        )
        out["every hard case converged by its own test and lands within 1e-6 nats (worst gap)"] = target(
            max((c["worst_gap"] for c in ok), default=None),
            len(ok) == len(cases) and all(c["converged"] and c["worst_gap"] <= 1e-6 for c in ok),
            " nats",
        )
    return out


def finalize(res: dict) -> None:
    """Times to accuracy, ratios and targets, computed from ``res`` alone (so ``--report-only``
    can redo them)."""
    n_cfg = len(res["problem"]["betas"])
    has_torch = res.get("torch") is not None
    has_newton = res.get("sweep_newton") is not None
    keys = tolerance_keys(res)
    ms = methods(res)
    times = {key: {m: time_to_accuracy(res, m, key) for m in ms} for key in keys}
    res["time_to_accuracy_all_configs"] = times
    res["notes"] = [
        "With plain gradient ascent the trajectory is rotation invariant, so the eigenbasis changes only the "
        "cost per step; with Adam (per-coordinate scaling) it is not, so the eigenbasis trajectory differs and "
        "its time to accuracy is an algorithmic speed-up, not the same computation done faster.",
        "PyTorch baselines start from our initial parameters with our optimiser (Adam, lr 1e-2, cosine over "
        f"{res['optimiser']['steps']} steps); the public reproductions usually use a constant learning rate, which was not tested here.",
        "Projected times = measured seconds per step x the steps our identical trajectory needed, for "
        "configurations that were not run or were cut by the wall-time budget; a configuration that our "
        "trajectory never brought within the tolerance is charged the whole schedule (hence the lower bounds).",
        "Single full runs for the sweeps (not affordable to repeat); matmul, breakdown and scaling are medians.",
        "Adam sweeps run with stop_when_converged=False (no checks between chunks); train_sweep still diagnoses "
        "convergence once after the last step, inside its training clock, and their time to accuracy spreads "
        "that clock evenly over the records (every Adam step costs the same).",
    ]
    if has_newton:
        res["notes"] += [
            "Newton (trust-region on the projected objective, the default TrainConfig) iterations have unequal "
            "cost (the conjugate-gradient steps per iteration vary, and a vmapped sweep runs them in lockstep, "
            "so every configuration pays for the one needing most), so its clock is not interpolated: the sweep "
            "is called twice (the second call's programs come from JAX's compilation cache, so compilation, "
            "wherever train_sweep does it, stays out of its clock); a progress callback of that second call "
            "records time.perf_counter() at the end of every chunk of "
            f"{res['sweep_newton']['config']['check_every']} iterations (after the chunk's convergence check), "
            "and each iteration's gap is charged the time of its chunk's end; time to accuracy = the first "
            "call's compile seconds + that clock. Its times are thus upper bounds by up to one chunk.",
            "Newton trains in the eigenbasis of S and draws its start in the data basis (its trajectory is "
            "basis-invariant), so it does not start from the Adam sweeps' initial parameters; it uses the same "
            "closed-form optima for its gaps. Its start-up (the data and moments rotated into the eigenbasis) "
            "and compilation are reported apart; the shared load, moments and eigendecomposition are in "
            "'problem'.",
            "Cost per Newton iteration in Adam steps = seconds per iteration per configuration / seconds per "
            "Adam step per configuration of the eigenbasis Adam sweep of the same run.",
        ]

    def ratio(key, method, reference):
        """time(method) / time(reference); ``at_least`` when only the method's time is a lower
        bound; ``None`` when the reference's own time is a lower bound or a time is missing."""
        t, r = times[key].get(method), times[key].get(reference)
        if t is None or r is None or r["at_least"]:
            return None
        return {"ratio": t["seconds"] / r["seconds"], "at_least": t["at_least"]}

    refs = ("ours_sweep_data", "ours_sweep_eigen") + (("ours_newton",) if has_newton else ())
    res["ratios_time_to_accuracy"] = {
        ref: {key: {m: ratio(key, m, ref) for m in ms if m != ref} for key in keys} for ref in refs
    }
    per_step = res["sweep_data"]["seconds_per_step_per_config"]
    res["ratios_time_per_step_per_config"] = {
        "loop_over_sweep": res["python_loop_train_single"]["seconds_per_step_per_config"] / per_step,
        "sweep_data_over_eigen": per_step / res["sweep_eigen"]["seconds_per_step_per_config"],
        **(
            {f"torch_{x}_over_sweep": res["torch"][x]["seconds_per_step_median"] / per_step for x in "abc"}
            if has_torch
            else {}
        ),
        **(
            {"newton_iteration_over_adam_eigen_step": res["sweep_newton"]["adam_steps_per_iteration"]}
            if has_newton
            else {}
        ),
    }
    if has_torch:  # do (a), (b) follow our trajectory? compare the first step within each tolerance
        same = []
        for x in "ab":
            for p in res["torch"][x]["per_config"]:
                if p is not None:
                    for key, st in p["first_step_within"].items():
                        if st is not None:
                            same.append(st == p["ours_first_step_within"][key])
        res["torch_same_first_steps_as_ours"] = f"{sum(same)}/{len(same)}"
    steps = res["optimiser"]["steps"]
    vs_data, vs_eigen = (
        res["ratios_time_to_accuracy"]["ours_sweep_data"],
        res["ratios_time_to_accuracy"]["ours_sweep_eigen"],
    )
    pr = res["ratios_time_per_step_per_config"]
    res["targets"] = {
        **(newton_targets(res, times, res["ratios_time_to_accuracy"]) if has_newton else {}),
        f"Adam, data basis, reaches 1e-5 on every config within {steps} steps": not times["1e-05"]["ours_sweep_data"][
            "at_least"
        ],
        f"Adam, eigenbasis, reaches 1e-5 on every config within {steps} steps": not times["1e-05"]["ours_sweep_eigen"][
            "at_least"
        ],
        "time to 1e-5: (a) / ours Adam eigenbasis (target >= 30x)": vs_eigen["1e-05"]["a"],
        "time to 1e-5: (b) / ours Adam eigenbasis (target >= 5x)": vs_eigen["1e-05"]["b"],
        "time to 1e-5: (a) / ours Adam data basis (same trajectory)": vs_data["1e-05"]["a"],
        "time to 1e-5: (b) / ours Adam data basis (same trajectory)": vs_data["1e-05"]["b"],
        "time to 1e-2: (a) / ours Adam data basis (same trajectory)": vs_data["0.01"]["a"],
        "time to 1e-2: (b) / ours Adam data basis (same trajectory)": vs_data["0.01"]["b"],
        "per-step ratio (a) / ours, data basis": pr.get("torch_a_over_sweep"),
        "per-step ratio (b) / ours, data basis": pr.get("torch_b_over_sweep"),
        "(c) reaches 1e-5 on every config (expected: no)": None
        if not has_torch
        else res["torch"]["c"]["tolerances"]["1e-05"]["configs_measured"] == n_cfg,
        "fraction of float64 matmul rate (target >= 0.5)": res["hardware"]["fraction_of_float64_matmul"],
    }


def _time_cell(t, steps) -> str:
    if t is None:
        return "—"
    if t["at_least"]:
        return f"≥ {t['seconds']:.3g} s ({t.get('why', f'not reached in {steps} steps')})"
    return f"{t['seconds']:.3g} s"


def _ratio_cell(r) -> str:
    return "—" if r is None else ("≥ " if r["at_least"] else "") + f"{r['ratio']:.3g}x"


def _target_cell(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, dict) and "ratio" in v:
        if "met" not in v:
            return _ratio_cell(v)
        verdict = {True: "met", False: "NOT met", None: "undetermined (a lower bound below the target)"}
        return f"{_ratio_cell(v)} — {verdict[v['met']]}"
    if isinstance(v, dict):
        value = "—" if v["value"] is None else f"{v['value']:.3g}{v['unit']}"
        return f"{value} — {'met' if v['met'] else 'NOT met'}"
    return f"{v:.3g}"


def _tol_label(key: str) -> str:
    return f"{float(key):.0e}".replace("e-0", "e-")


def markdown(res: dict) -> str:
    p, o = res["problem"], res["optimiser"]
    n, steps = len(p["betas"]), o["steps"]
    times, ratios = res["time_to_accuracy_all_configs"], res["ratios_time_to_accuracy"]
    keys, ms = tolerance_keys(res), methods(res)
    nw = res.get("sweep_newton")
    ratio_refs = [r for r in ("ours_newton", "ours_sweep_eigen", "ours_sweep_data") if r in ratios]
    ref_names = {"ours_newton": "Newton", "ours_sweep_eigen": "Adam eigenbasis", "ours_sweep_data": "Adam data basis"}
    ref_keys = {
        "ours_newton": [k for k in ("1e-05", "1e-06") if k in keys],
        "ours_sweep_eigen": ["0.01", "1e-05"],
        "ours_sweep_data": ["0.01", "1e-05"],
    }
    lines = [
        f"# Speed of exact-ELBO training ({res['mode']} run, {res['device']}, {res['cpu_count']} CPUs, "
        f"total {res['total_seconds']:.0f} s)",
        "",
        f"Shipped MNIST, n = {p['n']}, d = {p['d']}, k = {p['k']}, sigma2 = {p['sigma2']}, {n} betas "
        f"{p['betas'][0]:.3g}..{p['betas'][-1]:.3g} ({p['thresholds_inside']} thresholds lambda_i/sigma2 "
        f"inside), float64. Adam methods: lr {o['lr']}, {o['schedule']} over {steps} steps, the same initial "
        f"parameters for every Adam method, exact ELBO every {o['log_every']} steps. "
        + (
            "Newton: the default `TrainConfig(latent_dim=k)` (trust-region Newton on the projected objective, "
            f"eigenbasis, at most {nw['config']['max_iterations']} iterations, every iteration recorded, "
            f"convergence checked every {nw['config']['check_every']}, stops once every configuration has "
            "converged). "
            if nw
            else ""
        )
        + "Time to accuracy = wall time until EVERY configuration's exact beta-ELBO is within the tolerance "
        "of its closed-form optimum (compile time included); ≥ marks a method that had not got there when "
        "its schedule ended (the time is what it spent).",
        *(["", provenance(res)] if provenance(res) else []),
        "",
        "| method | cost / step / config | "
        + " | ".join(f"time to {_tol_label(k)} nats" for k in keys)
        + " | "
        + " | ".join(f"time / {ref_names[r]} ({'; '.join(_tol_label(k) for k in ref_keys[r])})" for r in ratio_refs)
        + " | worst config's best gap |",
        "|---" * (3 + len(keys) + len(ratio_refs)) + "|",
    ]
    labels = {
        "ours_newton": "ours: Newton (default), vmapped sweep, eigenbasis",
        "ours_sweep_data": "ours: Adam, vmapped sweep, data basis",
        "ours_sweep_eigen": "ours: Adam, vmapped sweep, eigenbasis of S (algorithmic)",
        "loop": "Python loop of jitted `train_single`, Adam (measured s/step x steps needed)",
        "a": "PyTorch (a): dense A = I - WV, tr(A S A^T)",
        "b": "PyTorch (b): exact ELBO via d x k products",
        "c": "PyTorch (c): minibatch 100, reparameterised ELBO",
    }

    def ratio_cells(ref, m):
        if m == ref:
            return "1"
        return "; ".join(_ratio_cell(ratios[ref][k][m]) for k in ref_keys[ref])

    for m in ms:
        if m in "abc" and res.get("torch") is None:
            continue
        if m == "ours_newton":
            cost = (
                f"{nw['seconds_per_iteration_per_config'] * 1e6:.0f} µs / iteration "
                f"(= {nw['adam_steps_per_iteration']:.0f} Adam eigenbasis steps)"
            )
            b = nw["time_to_accuracy"]["best_worst_gap"]
            best = f"{b['gap']:.2e} (iteration {b['step']}, {b['seconds']:.0f} s)"
            label = labels[m]
        elif m in ADAM_SWEEPS:
            s = res[ADAM_SWEEPS[m]]
            cost = f"{s['seconds_per_step_per_config'] * 1e6:.0f} µs"
            b = s["time_to_accuracy"]["best_worst_gap"]
            best = f"{b['gap']:.2e} (step {b['step']}, {b['seconds']:.0f} s)"
            label = labels[m]
        elif m == "loop":
            cost = f"{res['python_loop_train_single']['seconds_per_step_per_config'] * 1e6:.0f} µs"
            diff = res["python_loop_train_single"]["max_abs_elbo_diff_vs_sweep_history"]
            best = (
                f"steps needed taken from the Adam sweep (round-off, amplified by Adam, moves a single "
                f"run's ELBO up to {diff:.2g} nats from the sweep's on the way)"
            )
            label = labels[m]
        else:
            s = res["torch"][m]
            cost = f"{s['seconds_per_step_median'] * 1e6:.0f} µs"
            w = s["worst_of_best_gaps"]
            best = f"{w['gap']:.2e} (step {w['step']}, {w['seconds_into_that_config']:.0f} s into that config)"
            budget = str(s["budget_seconds"]).replace(" per configuration", "")
            label = (
                f"{labels[m]} ({s['configs_run']} of {n} configs run, budget {budget} s"
                f"{' per configuration' if m == 'a' else ''})"
            )
        cells = []
        for key in keys:
            t = times[key][m]
            if m == "c" and t is None:
                v = res["torch"]["c"]["tolerances"][key]
                cells.append(f"not reached ({v['configs_measured']}/{n} configs)")
            elif m in "ab" and res["torch"][m]["tolerances"][key]["label"] != "measured":
                v = res["torch"][m]["tolerances"][key]
                cells.append(_time_cell(t, steps) + f", projected for {v['configs_projected']}/{n} configs")
            else:
                cells.append(_time_cell(t, steps))
        lines.append(
            f"| {label} | {cost} | "
            + " | ".join(cells)
            + " | "
            + " | ".join(ratio_cells(r, m) for r in ratio_refs)
            + f" | {best} |"
        )
    if nw:
        lines += newton_markdown(res)
    h = res["hardware"]
    bd = h["sweep_step_breakdown_seconds"]
    lines += [
        "",
        "## Hardware limit (d = 784, k = 32, Adam step)",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| FLOPs of one exact-ELBO step (4kd^2 + 12dk^2 + 4dk) | {h['flops_per_step'] / 1e6:.1f} MFLOP |",
        f"| achieved (vmapped sweep, data basis) | {h['achieved_flops_per_second'] / 1e9:.1f} GFLOP/s |",
        f"| float64 matmul {h['matmul_shape']} | {h['matmul_float64_flops_per_second'] / 1e9:.1f} GFLOP/s |",
        f"| float32 matmul, same shape | {h['matmul_float32_flops_per_second'] / 1e9:.1f} GFLOP/s |",
        f"| fraction of float64 matmul rate (target >= 0.5) | {h['fraction_of_float64_matmul']:.2f} |",
        f"| one sweep step ({n} configs): V S product alone / objective / value+grad / full Adam step | "
        f"{bd['VS_product'] * 1e3:.2f} / {bd['objective'] * 1e3:.2f} / {bd['value_and_grad'] * 1e3:.2f} / "
        f"{bd['train_step'] * 1e3:.2f} ms |",
    ]
    sc = res["scaling"]
    lines += [
        "",
        "## Cost against problem size (random data, one configuration unless varied, Adam step)",
        "",
        "| varied | d | k | configs | µs / step / config | GFLOP/s | XLA temp + args (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, key in (("d", "vs_d"), ("k", "vs_k"), ("configs", "vs_configs")):
        for r in sc[key]:
            if "error" in r:
                lines.append(f"| {name} | {r['d']} | {r['k']} | {r['configs']} | {r['error']} | | |")
                continue
            mem = (r["xla_temp_bytes"] or 0) + (r["xla_argument_bytes"] or 0)
            lines.append(
                f"| {name} | {r['d']} | {r['k']} | {r['configs']} | "
                f"{r['seconds_per_step_per_config'] * 1e6:.1f} | {r['gflops_per_second']:.1f} | "
                f"{mem / 1e6:.1f} |"
            )

    def exponent(key):
        return "—" if sc[key] is None else f"{sc[key]:.2f}"

    lines += [
        "",
        f"Fitted exponents: time per step ~ d^{exponent('exponent_d_all')} over all d, "
        f"d^{exponent('exponent_d_large')} for d >= 784; ~ k^{exponent('exponent_k')}; total sweep step "
        f"time ~ configs^{exponent('exponent_configs_total_time')}. Each point ran in a fresh process; "
        f"{sc['hung_attempts']} attempts hung in XLA and were retried.",
    ]
    if res.get("hard_cases") is not None:
        lines += hard_cases_markdown(res["hard_cases"])
    lines += ["", "## Targets", "", "| target | measured |", "|---|---|"]
    for kk, v in res["targets"].items():
        lines.append(f"| {kk} | {_target_cell(v)} |")
    if res.get("torch_same_first_steps_as_ours"):
        lines += [
            "",
            f"PyTorch (a)/(b) reached each tolerance at the same recorded step as our Adam sweep in "
            f"{res['torch_same_first_steps_as_ours']} cases (same initial parameters, same optimiser).",
        ]
    pr = res["ratios_time_per_step_per_config"]
    lines += [
        "",
        "Per-step ratios (s / step / config over ours Adam, data basis; Newton: s / iteration / config "
        "over Adam eigenbasis s / step / config): " + ", ".join(f"{kk} {v:.3g}" for kk, v in pr.items()) + ".",
    ]
    lines += ["", "## Notes", ""] + [f"- {x}" for x in res["notes"]] + [""]
    return "\n".join(lines)


def provenance(res: dict) -> str:
    """The commit measured and the machine's load (other users share it) as one line."""
    code = res.get("code") or {}
    loads = res.get("load_average") or {}
    dirty = code.get("linear_vae_uncommitted_changes")
    parts = []
    if code.get("commit"):
        parts.append(
            f"Code: commit {code['commit'][:10]}"
            + (f", linear_vae with uncommitted changes ({len(dirty)} files)" if dirty else ", linear_vae as committed")
            + "."
        )
    if loads:
        parts.append(
            "1-minute load average (machine shared with other users' processes): "
            + ", ".join(f"{k.replace('_', ' ')} {v[0]:.1f}" for k, v in loads.items())
            + "."
        )
    return " ".join(parts)


def newton_markdown(res: dict) -> list[str]:
    """The Newton section: start-up, compilation, training, iterations, cost per iteration, clock."""
    nw, p = res["sweep_newton"], res["problem"]
    n = len(p["betas"])
    tta = nw["time_to_accuracy"]

    def hit(key):
        h = tta.get(key)
        return (
            "not reached"
            if h is None
            else f"{h['seconds']:.3g} s ({h['train_seconds']:.3g} s training), iteration {h['step']}"
        )

    used = nw["iterations_used_per_config"]
    lines = [
        "",
        "## Newton, the default optimiser, on this sweep",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| shared by every method: load / moments / eigendecomposition of S | {p.get('load_seconds', 0):.2f} / "
        f"{p.get('moments_seconds', 0):.2f} / {p.get('eigendecomposition_seconds', 0):.2f} s |",
        f"| start-up: data and moments into the eigenbasis (`TrainData.build`) | {nw['startup_seconds']:.2f} s |",
        f"| compilation (`compile_seconds`: initial state, chunk, check, update) | {nw['compile_seconds']:.1f} s |",
        f"| training until every configuration converged (own test) | {nw['train_seconds']:.1f} s, "
        f"{nw['iterations_run']} iterations in lockstep, {nw['convergence_checks']} convergence checks |",
        f"| converged by its own test | {sum(nw['converged_per_config'])}/{n} |",
        f"| iterations used per configuration (min / median / max) | {min(used)} / "
        f"{int(np.median(used))} / {max(used)} |",
    ]
    for key in tolerance_keys(res):
        lines.append(
            f"| time to {_tol_label(key)} nats on every configuration: compile + training (training) | {hit(key)} |"
        )
    lines += [
        f"| final worst gap / smallest gap seen (round-off) | {tta['final_worst_gap']:.2e} / {nw['min_gap_seen']:.1e} nats |",
        f"| cost per iteration per configuration, convergence checks included | "
        f"{nw['seconds_per_iteration_per_config'] * 1e3:.2f} ms = {nw['adam_steps_per_iteration']:.0f} Adam steps "
        f"(eigenbasis, {res['sweep_eigen']['seconds_per_step_per_config'] * 1e6:.0f} µs) |",
    ]
    tr = nw.get("trace")
    if tr:
        a = np.asarray(tr["adam_steps_per_iteration_per_config"])
        t6 = tr["time_to_accuracy_without_checks"].get("1e-06")
        lines += [
            f"| cost per iteration alone (second run, no checks) | {tr['seconds_per_iteration_per_config'] * 1e3:.2f} ms "
            f"= {tr['adam_steps_per_iteration']:.0f} Adam steps (first {a[0]:.0f}, max {a.max():.0f}, last {a[-1]:.0f}) |",
            f"| share of Newton's training clock spent in the convergence checks | {tr['checks_share_of_training']:.0%} |",
            f"| training to 1e-6 without checks (second run) | "
            f"{'not reached' if t6 is None else format(t6['train_seconds'], '.3g') + ' s, iteration ' + str(t6['step'])} |",
        ]
        lines += [
            "",
            "Per iteration (second run, no checks; seconds for all configurations together):",
            "",
            "| iteration | " + " | ".join(str(i + 1) for i in range(len(tr["seconds_per_iteration"]))) + " |",
            "|---" * (1 + len(tr["seconds_per_iteration"])) + "|",
            "| seconds | " + " | ".join(f"{x:.2f}" for x in tr["seconds_per_iteration"]) + " |",
            "| Adam steps / config | " + " | ".join(f"{x:.0f}" for x in a) + " |",
            "| worst gap | " + " | ".join(f"{x:.0e}" for x in tr["worst_gap_per_iteration"]) + " |",
        ]
    lines += ["", f"Clock: {nw['clock_note']}."]
    return lines


def hard_cases_markdown(hc: dict) -> list[str]:
    lines = ["", "## Hard cases (`linear_vae/verification/hard_cases.py`), default Newton sweep per case", ""]
    if hc.get("error"):
        return lines + [hc["error"] + "."]
    lines += [
        f"One vmapped `train_and_compare` per case (all its betas), {hc['note']}. Goal: training <= "
        f"{hc['goal_train_seconds']:g} s per case.",
        "",
        "| case | d | k | sigma2 | betas | training (s) | compile (s) | iterations used (per config) "
        "| worst gap (nats) | converged | verdicts |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in hc["cases"]:
        sigma2 = "learned" if c["sigma2"] is None else f"{c['sigma2']:g}"
        betas = ", ".join(f"{b:g}" for b in c["betas"])
        if "error" in c:
            lines.append(f"| {c['name']} | | {c['latent_dim']} | {sigma2} | {betas} | {c['error']} | | | | | |")
            continue
        verdicts = ", ".join(f"{v} {k}" for k, v in c["verdicts"].items() if v)
        lines.append(
            f"| {c['name']} | {c['d']} | {c['latent_dim']} | {sigma2} | {betas} | {c['train_seconds']:.1f} | "
            f"{c['compile_seconds']:.1f} | {', '.join(map(str, c['iterations_used_per_config']))} "
            f"(of {c['max_iterations']}) | "
            f"{c['worst_gap']:.1e} | {c['converged_configs']}/{len(c['betas'])} | {verdicts} |"
        )
    lines += [
        "",
        "Cases of the same shapes (d, k, learned or fixed sigma2, number of betas) share one compiled "
        "program: a compile time near 0 is that reuse. A sweep runs its configurations in lockstep, so its "
        "training time is that of its slowest configuration.",
        "",
        "What makes each case hard:",
        "",
    ] + [f"- `{c['name']}`: {c['description']}" for c in hc["cases"]]
    return lines
