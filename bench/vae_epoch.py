"""Seconds per training epoch of the flowlib VAE against a minimal hand-written PyTorch loop.

MLP 300-300, z = 40, batch 100, binarized MNIST (50,000 training images, 500 updates an
epoch), Adam. Every model is timed on the same ``--batches`` updates in the same process,
interleaved over ``--repeats`` rounds (median), and the epoch time is extrapolated from them
(``seconds / batches * 500``). The ratio column divides by the minimal loop's time.

    FLOWLIB_DATA=../shared/data python bench/vae_epoch.py [--batches 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from flowlib.data import load
from flowlib.flows.registry import build
from flowlib.model.vae import VAE

LOG_2PI = math.log(2 * math.pi)


class MinimalVAE(nn.Module):
    """The same architecture and single-sample ELBO, written out with no abstractions."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(784, 300), nn.Softplus(), nn.Linear(300, 300), nn.Softplus())
        self.mu, self.log_var = nn.Linear(300, 40), nn.Linear(300, 40)
        self.dec = nn.Sequential(
            nn.Linear(40, 300), nn.Softplus(), nn.Linear(300, 300), nn.Softplus(), nn.Linear(300, 784)
        )

    def loss(self, x):
        h = self.enc(x)
        mu, log_var = self.mu(h), self.log_var(h)
        eps = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * log_var) * eps
        log_q = -0.5 * (eps * eps + log_var + LOG_2PI).sum(-1)
        log_p = -0.5 * (z * z + LOG_2PI).sum(-1)
        rec = -F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1)
        return -(rec + log_p - log_q).mean()


def time_updates(loss_fn, params, x, batches):
    opt = torch.optim.Adam(params, lr=1e-3)
    t0 = time.perf_counter()
    for b in range(batches):
        loss = loss_fn(x[b * 100 : (b + 1) * 100])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    x, _ = load("binarized-mnist", "train")
    x = x[: args.batches * 100]
    minimal = MinimalVAE()
    models = {"minimal loop (no flow)": (minimal.loss, minimal.parameters)}
    for label, name, k in [
        ("flowlib, no flow", "none", 0),
        ("flowlib, planar K=10", "planar", 10),
        ("flowlib, IAF 4 steps", "iaf", 4),
        ("flowlib, PCP-Map K=1", "pcpmap", 1),
    ]:
        vae = VAE(784, 40, (300, 300), build(name, 40, context_dim=300, length=k))
        models[label] = (lambda x, vae=vae: vae.elbo(x).loss(), vae.parameters)
    times = {label: [] for label in models}
    for loss_fn, params in models.values():  # warm-up
        time_updates(loss_fn, list(params()), x, 5)
    for _ in range(args.repeats):
        for label, (loss_fn, params) in models.items():
            times[label].append(time_updates(loss_fn, list(params()), x, args.batches))
    base = statistics.median(times["minimal loop (no flow)"])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.batches} updates x "
        f"{args.repeats} rounds, median; epoch = 500 updates"
    )
    print(f"{'model':28s} {'s/epoch':>8s} {'ratio':>6s}")
    for label, ts in times.items():
        t = statistics.median(ts)
        print(f"{label:28s} {t / args.batches * 500:8.2f} {t / base:6.2f}")


if __name__ == "__main__":
    main()
