"""The PyTorch baselines: one configuration of an eager float64 implementation of the same
beta-ELBO training, in the styles of the public reproductions (see :func:`torch_baseline`).

PyTorch is imported inside :func:`torch_baseline` only, so that importing this module (and
:mod:`benchmarks.measure`) never starts its thread pool next to JAX's.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .bookkeeping import TOLS

LOG_2PI = math.log(2 * math.pi)


def torch_baseline(
    kind,
    init,
    beta,
    sigma2,
    optimum,
    S,
    mean,
    trace,
    X,
    steps,
    lr,
    budget_s,
    eval_every=100,
    seed=0,
    schedule="cosine",
    stop_tol=min(TOLS),
):
    """One configuration of a PyTorch eager float64 baseline (kinds "a", "b", "c").

    Returns records [(step, training seconds so far, gap)], stops once the gap is <= ``stop_tol``
    (the smallest tolerance reported) or the training clock passes ``budget_s``.  Evaluation time
    is excluded.
    """
    import torch

    d, k = init["W"].shape
    params = {n: torch.tensor(np.asarray(v), dtype=torch.float64, requires_grad=True) for n, v in init.items()}
    W, mu, V, log_D = params["W"], params["mu"], params["V"], params["log_D"]
    opt = torch.optim.Adam([W, mu, V, log_D], lr=lr)
    const = -0.5 * d * (LOG_2PI + math.log(sigma2))
    eye = torch.eye(d, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    n = X.shape[0]

    def exact_dk():  # elbo_terms, d x k products only
        D = torch.exp(log_D)
        delta = mean - mu
        P = V @ S
        PVt = P @ V.T
        WtW = W.T @ W
        tr_ASA = trace - 2.0 * torch.sum(W * P.T) + torch.sum(WtW * PVt)
        Vd = V @ delta
        Ad = delta - W @ Vd
        rec = tr_ASA + Ad @ Ad + torch.sum(D * torch.diagonal(WtW))
        kl = 0.5 * (D + torch.diagonal(PVt) + Vd**2 - 1.0 - log_D)
        return const - rec / (2 * sigma2) - beta * kl.sum()

    def exact_dense():  # as the public reproductions write it: A = I - W V, d x d, every step
        D = torch.exp(log_D)
        delta = mean - mu
        A = eye - W @ V
        rec = torch.trace(A @ S @ A.T) + torch.sum((A @ delta) ** 2) + torch.sum(D * torch.sum(W * W, 0))
        kl = 0.5 * (D + torch.diagonal(V @ S @ V.T) + (V @ delta) ** 2 - 1.0 - log_D)
        return const - rec / (2 * sigma2) - beta * kl.sum()

    def stochastic(batch):  # reparameterised ELBO on a minibatch (one sample of z per datapoint)
        centred = batch - mu
        means = centred @ V.T
        z = means + torch.exp(0.5 * log_D) * torch.randn(means.shape, generator=gen, dtype=torch.float64)
        residual = centred - z @ W.T
        log_lik = const - torch.sum(residual**2, dim=1) / (2 * sigma2)
        kl = 0.5 * (torch.exp(log_D) + means**2 - 1.0 - log_D).sum(1)
        return torch.mean(log_lik) - beta * torch.mean(kl)

    records, clock, perm, pos = [], 0.0, None, n
    start = time.perf_counter()
    for step in range(steps):
        if schedule == "cosine":  # optax.cosine_decay_schedule(lr, steps) at update count `step`
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        opt.zero_grad(set_to_none=True)
        if kind == "a":
            loss = -exact_dense()
        elif kind == "b":
            loss = -exact_dk()
        else:  # epoch by epoch: a fresh permutation, then consecutive batches of 100
            if pos + 100 > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            loss = -stochastic(X[perm[pos : pos + 100]])
            pos += 100
        loss.backward()
        opt.step()
        if (step + 1) % eval_every == 0:
            clock += time.perf_counter() - start
            with torch.no_grad():
                gap = optimum - float(exact_dk())
            records.append((step + 1, clock, gap))
            if gap <= stop_tol or clock > budget_s or not math.isfinite(gap):
                break
            start = time.perf_counter()
    return records
