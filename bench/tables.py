"""Markdown tables of the committed benchmark results, for the README: the peers bench
(``results/bench/peers.json``, from ``bench/peers.py``) and the rows' cost against their FLOP floors
(``results/mnist/cost.json``, from ``bench/flow_cost.py``), each with the code before the speed-up
where the file measured it (``--baseline``: rows ``NAME@BASELINE``, one column per baseline).

    python bench/tables.py [--peers results/bench/peers.json] [--cost results/mnist/cost.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def peers_table(result: dict) -> str:
    # in the order the file measured them (flowlib, then its baselines as the command named them)
    libs = list(dict.fromkeys(lib for stack in result["stacks"].values() for lib in stack
                              if lib != "fastest_peer"))
    baseline = [lib for lib in libs if lib.startswith("flowlib_")]
    head = "".join(f" {b} / peer |" for b in baseline)
    # files from before the ReLU stack timed flowlib's IAF with ReLU as a column of their own
    relu = any("flowlib-relu" in stack for stack in result["stacks"].values())
    lines = [f"| stack | fastest peer |{head} flowlib / peer |" + (" flowlib, ReLU / peer |" if relu else ""),
             "|---|---|" + "---|" * (len(baseline) + 1 + relu)]
    for name, stack in result["stacks"].items():
        peer = stack["fastest_peer"]
        # a baseline from before IAF's choice of activation has no ReLU stack: an empty cell
        cells = "".join(f" {stack[b]['ratio_to_fastest_peer']:.2f} |" if b in stack else " |"
                        for b in baseline)
        line = (f"| {name} | {peer} ({stack[peer]['median_ms']:.2f} ms) |{cells}"
                f" {stack['flowlib']['ratio_to_fastest_peer']:.2f} |")
        if relu:
            line += (f" {stack['flowlib-relu']['ratio_to_fastest_peer']:.2f} |" if "flowlib-relu" in stack
                     else " |")
        lines.append(line)
    return "\n".join(lines)


def baselines(rows: dict) -> list[str]:
    """The baselines' package names, in the order the file measured them."""
    return list(dict.fromkeys(name.split("@")[1] for name in rows if "@" in name))


def before_after(result: dict) -> dict:
    """Per row: training and evaluation ratios after (this code) and before (each baseline's rows,
    over that baseline's own no-flow row: ``ratio_before[NAME]``), and the FLOP floors of this code."""
    rows = result["rows"]
    out = {}
    for name, r in rows.items():
        if "@" in name:
            continue
        entry = {"label": r["label"], "ratio": r["ratio"], "flop_ratio": r["flop_ratio"],
                 "ratio_before": {}, "eval_ratio_before": {}}
        if "eval_ratio" in r:
            entry.update(eval_ratio=r["eval_ratio"], eval_flop_ratio=r["eval_flop_ratio"])
        for b in baselines(rows):
            old, old_none = rows[f"{name}@{b}"], rows[f"none@{b}"]
            entry["ratio_before"][b] = old["ratio"] / old_none["ratio"]
            if "eval_ratio" in r:
                entry["eval_ratio_before"][b] = old["eval_ratio"] / old_none["eval_ratio"]
        out[name] = entry
    return out


def cost_table(result: dict) -> str:
    rows, names = before_after(result), baselines(result["rows"])
    cols = "".join(f" {b} |" for b in names)
    lines = [f"| row | training:{cols} now | FLOP floor | now / floor "
             f"| evaluation:{cols} now | FLOP floor | now / floor |",
             "|---|" + "---|" * (2 * len(names) + 6)]
    for r in rows.values():
        before = "".join(f" {r['ratio_before'][b]:.2f} |" for b in names)
        ev = " -" * len(names) + " - | - | -"
        if "eval_ratio" in r:
            ev = ("".join(f" {r['eval_ratio_before'][b]:.2f} |" for b in names)
                  + f" {r['eval_ratio']:.2f} | {r['eval_flop_ratio']:.2f} | "
                  f"{r['eval_ratio'] / r['eval_flop_ratio']:.2f}")
        lines.append(f"| {r['label']} |{before} {r['ratio']:.2f} | {r['flop_ratio']:.2f} | "
                     f"{r['ratio'] / r['flop_ratio']:.2f} |{ev} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=pathlib.Path, default=ROOT / "results" / "bench" / "peers.json")
    parser.add_argument("--cost", type=pathlib.Path, default=ROOT / "results" / "mnist" / "cost.json")
    args = parser.parse_args()
    for path, table in ((args.peers, peers_table), (args.cost, cost_table)):
        result = json.loads(path.read_text())
        load = result["machine"].get("load_average")
        print(f"`{result['command']}` (load average {', '.join(f'{x:.1f}' for x in load)})\n" if load
              else f"`{result['command']}`\n")
        print(table(result) + "\n")


if __name__ == "__main__":
    main()
