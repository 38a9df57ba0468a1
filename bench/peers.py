"""flowlib against peer flow libraries (normflows, pyro-ppl, nflows, zuko) on the flows they share.

Four stacks on a batch of 128 x D = 40, each built the way its library builds it:

- planar x 10: flowlib, normflows, pyro;
- radial x 10: flowlib, normflows, pyro;
- Householder x 40 (reflections): flowlib (40 layers), pyro (``count_transforms=40``), nflows
  (``HouseholderSequence``);
- IAF x 4 (MADE 320 x 2, variable order reversed between steps): flowlib (gated IAF), pyro
  (``AffineAutoregressive(stable=True)``, the gated IAF), normflows and nflows
  (``MaskedAffineAutoregressive``, 2 hidden layers), zuko (``MAF``; one pass in its forward
  direction). Twice: ``IAF x 4`` with ELU in every library's MADE (flowlib's default, as Kingma et
  al. 2016), and ``IAF x 4, ReLU`` with ReLU in every one (the peers' default). Every peer takes
  the activation as an argument. The matrix products are the same in every library (three masked
  layers, 40 -> 320 -> 320 -> 80); the activations are not quite: flowlib, pyro and zuko apply one
  after each hidden layer, normflows' and nflows' MADE with ``num_blocks=1`` after the second only (its
  first layer, ``initial_layer``, is linear), one activation of a 128 x 320 tensor a step fewer.

What is timed is one call of forward + backward of a reverse-KL-style loss,
``mean(|z_K|^2 / 2 - log|det dz_K/dz_0|)``, with gradients for every parameter. Every library's
stacks are timed in the same process, one thread, interleaved: each round times ``--calls``
calls of every stack of every library in turn, and the table gives the median over ``--rounds``
rounds, so that a change of machine load hits all alike. The clock is the process's CPU time
(``--clock cpu``, the default): on a machine shared with other jobs, wall time also counts the
time the process waits for a core (``--clock wall`` measures it anyway). ``ratio`` is a stack's median over
the fastest peer's median (flowlib's row: < 1 means flowlib is faster).

Before timing, every stack's log-determinant is checked against a brute-force autograd Jacobian
(``torch.linalg.slogdet`` of the per-sample Jacobian, float64) at perturbed parameters (every
parameter moved by Gaussian noise, std 0.3, 0.03 for the IAF stacks' wide MADEs: defaults sit near
the identity, where a wrong formula can look right). Pyro's Sylvester flow is checked too (it is
not timed: no peer shares it).

Peers are an optional extra: ``pip install -e .[bench]``. A peer that is not installed is
skipped, and said so. ``--baseline NAME [NAME ...]`` also times the stacks of importable copies
of flowlib under the package names NAME (e.g. the code before a change, copied to ``flowlib_before``).

    python bench/peers.py [--rounds 15] [--calls 5] [--baseline flowlib_before] \\
        [--json results/bench/peers.json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from flow_cost import cpu_description  # bench/flow_cost.py, beside this script

DIM, BATCH = 40, 128
STACKS = ("planar x 10", "radial x 10", "Householder x 40", "IAF x 4", "IAF x 4, ReLU")
# the perturbation of every parameter in the log-det check: MADE's 320-wide layers get less, since
# noise of 0.3 on every weight of four of them makes the Jacobian's entries so large that slogdet
# itself loses every digit
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
CHECK_STD = {"planar x 10": 0.3, "radial x 10": 0.3, "Householder x 40": 0.3, "IAF x 4": 0.03,
             "IAF x 4, ReLU": 0.03}
# the MADE's hidden activation in the two IAF stacks, every library alike
ACTIVATION = {"IAF x 4": "elu", "IAF x 4, ReLU": "relu"}
# the activation as a module class (pyro, zuko) for each name; normflows and nflows take F.<name>
MODULES = {"elu": torch.nn.ELU, "relu": torch.nn.ReLU}
PEERS = ("normflows", "pyro", "nflows", "zuko")


# --------------------------------------------------------------- stacks, one builder a library
# Each builder returns {stack: (module holding the parameters, z -> (z_K, logdet))}.


def flowlib_stacks(package: str = "flowlib"):
    try:
        build = importlib.import_module(f"{package}.flows.registry").build
    except ModuleNotFoundError:  # a copy of flowlib from before the registry (flowlib/posteriors.py)
        old = importlib.import_module(f"{package}.posteriors").build_flow
        build = lambda name, dim, length, hidden=None: old(name, length, dim, None, iaf_hidden=hidden or 320)
    out = {}
    for stack, (name, k) in zip(STACKS[:3], [("planar", 10), ("radial", 10), ("householder", 40)]):
        flow = build(name, DIM, length=k)
        out[stack] = (flow, flow)
    for stack, activation in ACTIVATION.items():
        try:
            flow = build("iaf", DIM, length=4, hidden=320, activation=activation)
        except TypeError:  # a copy of flowlib from before the choice of activation: ELU only
            if activation != "elu":
                continue
            flow = build("iaf", DIM, length=4, hidden=320)
        out[stack] = (flow, flow)
    return out


def normflows_stacks():
    import normflows as nf

    def chain(layers):
        module = torch.nn.ModuleList(layers)

        def run(z):
            total = torch.zeros(z.shape[0], dtype=z.dtype)
            for f in module:
                z, ld = f(z)
                total = total + ld
            return z, total

        return module, run

    reverse = nf.flows.Permute(DIM, mode="shuffle")
    reverse.perm.copy_(torch.arange(DIM - 1, -1, -1))
    reverse.inv_perm.copy_(torch.arange(DIM - 1, -1, -1))

    def iaf(activation):
        layers = []
        for k in range(4):
            if k:
                layers.append(reverse)
            layers.append(nf.flows.MaskedAffineAutoregressive(
                DIM, 320, num_blocks=1, use_residual_blocks=False, activation=getattr(F, activation)))
        return chain(layers)

    return {
        "planar x 10": chain([nf.flows.Planar((DIM,)) for _ in range(10)]),
        "radial x 10": chain([nf.flows.Radial((DIM,)) for _ in range(10)]),
        **{stack: iaf(activation) for stack, activation in ACTIVATION.items()},
    }


def pyro_chain(transforms):
    module = torch.nn.ModuleList(transforms)

    def run(z):
        total = torch.zeros(z.shape[0], dtype=z.dtype)
        for t in module:
            y = t(z)
            total = total + t.log_abs_det_jacobian(z, y)
            z = y
        return z, total

    return module, run


def pyro_stacks():
    from pyro.distributions import transforms as T
    from pyro.nn import AutoRegressiveNN

    natural, reversed_ = torch.arange(DIM), torch.arange(DIM - 1, -1, -1)

    def iaf(activation):
        nonlinearity = MODULES[activation]()
        return pyro_chain([T.AffineAutoregressive(AutoRegressiveNN(
            DIM, [320, 320], permutation=natural if k % 2 == 0 else reversed_, nonlinearity=nonlinearity),
            stable=True) for k in range(4)])

    return {
        "planar x 10": pyro_chain([T.Planar(DIM) for _ in range(10)]),
        "radial x 10": pyro_chain([T.Radial(DIM) for _ in range(10)]),
        "Householder x 40": pyro_chain([T.Householder(DIM, count_transforms=40)]),
        **{stack: iaf(activation) for stack, activation in ACTIVATION.items()},
    }


def nflows_stacks():
    from nflows import transforms as T

    house = T.HouseholderSequence(DIM, 40)

    def iaf(activation):
        layers = []
        for k in range(4):
            if k:
                layers.append(T.ReversePermutation(DIM))
            layers.append(T.MaskedAffineAutoregressiveTransform(
                DIM, 320, num_blocks=1, use_residual_blocks=False, activation=getattr(F, activation)))
        flow = T.CompositeTransform(layers)
        return flow, flow

    return {"Householder x 40": (house, house), **{stack: iaf(a) for stack, a in ACTIVATION.items()}}


def zuko_stacks():
    import zuko

    def iaf(activation):
        activation = MODULES[activation]
        # orders alternate between transforms: reversed
        maf = zuko.flows.MAF(DIM, transforms=4, hidden_features=(320, 320), activation=activation)

        def run(z):
            return maf.transform().call_and_ladj(z)

        return maf, run

    return {stack: iaf(activation) for stack, activation in ACTIVATION.items()}


BUILDERS = {"normflows": normflows_stacks, "pyro": pyro_stacks, "nflows": nflows_stacks, "zuko": zuko_stacks}


# --------------------------------------------------------------- checks and timing


def perturb(module, std, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))


def logdet_error(module, run, std=0.3, n=4, seed=0):
    """max |logdet - log|det J|| over ``n`` samples, float64, at parameters perturbed by ``std``."""
    module = module.double()
    saved = {k: v.clone() for k, v in module.state_dict().items()}
    perturb(module, std, seed=seed)
    z = torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    _, logdet = run(z)
    J = torch.autograd.functional.jacobian(lambda x: run(x)[0], z)  # (n, D, n, D)
    idx = torch.arange(n)
    reference = torch.linalg.slogdet(J[idx, :, idx, :]).logabsdet
    module.load_state_dict(saved)
    module.float()
    return (logdet.detach() - reference).abs().max().item()


def loss_step(module, run, z):
    zK, logdet = run(z)
    loss = (0.5 * (zK * zK).sum(-1) - logdet).mean()
    for p in module.parameters():
        p.grad = None
    loss.backward()


def time_calls(module, run, z, calls, clock=time.process_time):
    # a new input tensor for every call: pyro caches a transform's output keyed on its input's
    # identity, and would return a graph that the previous backward freed
    zs = [z.clone() for _ in range(calls)]
    t0 = clock()
    for z in zs:
        loss_step(module, run, z)
    return (clock() - t0) / calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=CLOCKS, default="cpu")
    parser.add_argument("--baseline", nargs="+", default=[],
                        help="package names of other copies of flowlib to time")
    parser.add_argument("--json", type=pathlib.Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    libs = {"flowlib": flowlib_stacks()}
    for package in args.baseline:
        libs[package] = flowlib_stacks(package)
    missing = {}
    for peer in PEERS:
        try:
            libs[peer] = BUILDERS[peer]()
        except ImportError as err:
            missing[peer] = str(err)
    for peer, why in missing.items():
        print(f"skipped {peer}: not installed ({why}); pip install -e .[bench]")

    print("log|det| against the autograd Jacobian (float64, perturbed parameters), max abs error:")
    checks = {}
    for lib, stacks in libs.items():
        for stack, (module, run) in stacks.items():
            checks[f"{lib}: {stack}"] = logdet_error(module, run, CHECK_STD[stack])
    if "pyro" in libs:
        from pyro.distributions.transforms import Sylvester

        checks["pyro: Sylvester x 1 (not timed)"] = logdet_error(*pyro_chain([Sylvester(DIM)]))
    flowlib_sylvester = importlib.import_module("flowlib.flows").Sylvester(DIM)
    checks["flowlib: Sylvester x 1 (not timed)"] = logdet_error(flowlib_sylvester, flowlib_sylvester)
    for name, err in checks.items():
        print(f"  {name:42s} {err:9.2e}  {'ok' if err < 1e-8 else 'WRONG'}")

    z = torch.randn(BATCH, DIM)
    entries = [(lib, stack, module, run)
               for lib, stacks in libs.items() for stack, (module, run) in stacks.items()]
    for _, _, module, run in entries:  # warm-up
        time_calls(module, run, z, 3)
    times = {(lib, stack): [] for lib, stack, _, _ in entries}
    for r in range(args.rounds):
        for lib, stack, module, run in entries[r % len(entries):] + entries[: r % len(entries)]:
            times[lib, stack].append(time_calls(module, run, z, args.calls, CLOCKS[args.clock]))
    medians = {key: statistics.median(ts) for key, ts in times.items()}

    print(f"\ntorch {torch.__version__}, {args.threads} thread(s), batch {BATCH} x {DIM}, forward + "
          f"backward, {args.clock} time; median of {args.rounds} rounds x {args.calls} calls; "
          f"load {os.getloadavg()[0]:.2f}")
    rows = {}
    for stack in STACKS:
        peer_medians = {lib: medians[lib, stack] for lib in PEERS if (lib, stack) in medians}
        fastest = min(peer_medians, key=peer_medians.get) if peer_medians else None
        print(f"{stack}:")
        for lib in libs:
            if (lib, stack) not in medians:
                continue
            t = medians[lib, stack]
            ratio = t / peer_medians[fastest] if fastest else float("nan")
            rows.setdefault(stack, {})[lib] = {"median_ms": 1e3 * t, "ratio_to_fastest_peer": ratio}
            print(f"  {lib:16s} {1e3 * t:8.3f} ms  {ratio:5.2f}")
        if fastest:
            rows[stack]["fastest_peer"] = fastest
    shared = [stack for stack in STACKS if "fastest_peer" in rows.get(stack, {})]
    print("\nflowlib / fastest peer: " + ", ".join(
        f"{stack} {rows[stack]['flowlib']['ratio_to_fastest_peer']:.2f}" for stack in shared))
    if args.json is not None:
        versions = {}
        for lib in ["torch", *PEERS]:
            try:
                versions[lib] = importlib.import_module(lib).__version__
            except (ImportError, AttributeError):
                pass
        result = {
            "command": "python bench/peers.py " + " ".join(sys.argv[1:]),
            "machine": {"platform": platform.platform(),
                        "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                        "cpu": cpu_description(),
                        "threads": args.threads, "clock": args.clock, "load_average": os.getloadavg()},
            "versions": versions,
            "skipped": missing,
            "logdet_max_abs_error": checks,
            "stacks": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
