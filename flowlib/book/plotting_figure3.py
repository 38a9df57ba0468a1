"""What the chapters on planar, radial and volume-preserving flows (04-06) show of the Figure 3
fits (Rezende & Mohamed 2015): the fitted densities beside their targets (:func:`plot_fits`), the KL
against the flow length or the number of parameters (:func:`plot_kl`), the KL table
(:func:`markdown_table`) and the sentence that states the training budget (:func:`budget`).

They draw the results of :func:`flowlib.experiments.figure3.load`, which the chapters pass in (the
book's helpers never import a driver); matplotlib is imported when a figure is drawn.
"""

from __future__ import annotations

from ..twod.densities import BOXED
from ..twod.grid import Grid2D
from .plotting import plot_energy, plot_flow_density
from .style import MAX_WIDTH

__all__ = ["budget", "markdown_table", "plot_fits", "plot_kl"]


def budget(results: dict) -> str:
    """One sentence: the training budget, seeds, machine and time of a Figure 3 run
    (:func:`flowlib.experiments.figure3.run`)."""
    c, m = results["config"], results["machine"]
    decay = "with cosine decay to lr/100" if c["cosine"] else "constant"
    load = results.get("load_average_start")
    return (f"{c['steps']} steps of {c['batch_size']} samples per fit, {c['optimizer']} at learning rate "
            f"{c['lr']} ({decay}), beta annealed as min(1, 0.01 + t/{c['anneal_steps']}); the best of "
            f"{c['restarts']} random initialisations per fit by the free energy; "
            f"KL from {c['eval_samples']} fresh samples. The whole run took "
            f"{results['total_seconds'] / 60:.1f} min ({results['total_cpu_seconds'] / 60:.1f} CPU-min) "
            f"on {m['cpus']} CPUs "
            f"({m['processor']}, torch {m['torch']}, {m['torch_threads']} thread"
            + (f", load average {load[0]:.1f} at the start" if load else "") + ").")


def markdown_table(results: dict, flows=("planar",), targets=None) -> str:
    """A Markdown table of ``KL ± standard error`` (nats): one row per (flow, K), one column per target."""
    targets = list(targets or results["config"]["targets"])
    fits = {(f["flow"], f["K"], f["target"]): f for f in results["fits"]}
    lines = ["| flow | $K$ | " + " | ".join(targets) + " |", "|---|---|" + "---|" * len(targets)]
    for flow in flows:
        for k in results["config"]["K"]:
            cells = [f"{fits[flow, k, t]['kl']:.3f} ± {fits[flow, k, t]['kl_se']:.3f}" for t in targets]
            lines.append(f"| {flow} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_fits(results: dict, flows: dict, columns, targets=None, n: int = 150):
    """A Figure 3 style grid: one row per target, its density first, then ``q_K`` of each
    ``(flow, K)`` in ``columns``, all drawn exactly on ``(-4, 4)^2`` (planar layers by inversion).

    The figure fits the book's column (at most ``flowlib.book.style.MAX_WIDTH`` inches wide):
    columns are named once, on top, targets once, on the left, and each flow's KL (nats) is
    printed inside its panel rather than in a title."""
    import matplotlib.pyplot as plt

    targets = list(targets or results["config"]["targets"])
    kl = {f["key"]: f["kl"] for f in results["fits"]}
    grid = Grid2D(4.0, n)
    panel = min(1.7, MAX_WIDTH / (1 + len(columns)))
    size = (panel * (1 + len(columns)), panel * len(targets) + 0.45)
    fig, axes = plt.subplots(len(targets), 1 + len(columns), figsize=size, squeeze=False,
                             layout="constrained")
    for row, target in zip(axes, targets):
        plot_energy(row[0], BOXED[target], grid)
        row[0].set_ylabel(target, rotation=0, ha="right", va="center")
        for ax, (flow, k) in zip(row[1:], columns):
            key = f"{flow}/K={k}/{target}"
            plot_flow_density(ax, flows[key], grid)
            label = {"facecolor": "black", "alpha": 0.55, "edgecolor": "none", "pad": 1.5}
            ax.text(0.04, 0.04, f"KL {kl[key]:.2f}", transform=ax.transAxes, ha="left", va="bottom",
                    color="white", bbox=label)
    axes[0, 0].set_title("target")
    for ax, (flow, k) in zip(axes[0, 1:], columns):
        ax.set_title(f"{flow}, K = {k}")
    for row in axes:
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("")
            if j > 0:
                ax.set_ylabel("")
    return fig


def plot_kl(results: dict, flows=("planar", "radial", "nice"), targets=None, x: str = "K"):
    """KL (nats, with standard errors) against ``x`` (``"K"`` or ``"n_parameters"``), one panel a
    target, two panels a row (the figure fits the book's column); the KL axis is logarithmic when
    every estimate is positive, so that small and large values can both be read."""
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    targets = list(targets or results["config"]["targets"])
    ncols = min(2, len(targets))
    nrows = -(-len(targets) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(MAX_WIDTH, 2.5 * nrows + 0.3), sharex=True,
                             squeeze=False, layout="constrained")
    shown = [f for f in results["fits"] if f["flow"] in flows and f["target"] in targets]
    log_y = all(f["kl"] > 0 for f in shown)
    for ax, target in zip(axes.flat, targets):
        for flow in flows:
            fits = sorted((f for f in results["fits"] if f["flow"] == flow and f["target"] == target),
                          key=lambda f: f[x])
            ax.errorbar([f[x] for f in fits], [f["kl"] for f in fits], yerr=[f["kl_se"] for f in fits],
                        marker="o", capsize=3, label=flow)
        ax.set_xscale("log", base=2 if x == "K" else 10)
        if x == "K":  # ticks at the flow lengths themselves
            lengths = sorted({f["K"] for f in shown})
            ax.set_xticks(lengths, [str(k) for k in lengths])
            ax.xaxis.set_minor_locator(ticker.NullLocator())
        else:
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        if log_y:  # ticks at 1 and 3 times powers of ten, written as plain numbers
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 3.0)))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_title(target)
        ax.grid(True, alpha=0.3, which="both" if log_y else "major")
    for ax in axes.flat[len(targets):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("flow length K" if x == "K" else "number of parameters")
    for ax in axes[:, 0]:
        ax.set_ylabel("KL(q || p) (nats)")
    axes.flat[0].legend()
    return fig
