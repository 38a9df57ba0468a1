"""Markdown tables of the committed benchmark results, for the README: the peers bench
(``results/bench/peers.json``, from ``bench/peers.py``) and the rows' cost against their FLOP floors
(``results/mnist/cost.json``, from ``bench/flow_cost.py``), each with the code before the speed-up
where the file measured it (``--baseline``: rows ``NAME@BASELINE``).

    python bench/tables.py [--peers results/bench/peers.json] [--cost results/mnist/cost.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def peers_table(result: dict) -> str:
    libs = sorted({lib for stack in result["stacks"].values() for lib in stack if lib != "fastest_peer"})
    baseline = [lib for lib in libs if lib.startswith("flowlib_")]
    head = " | ".join(f"{b} / peer" for b in baseline)
    lines = [f"| stack | fastest peer | {head} | flowlib / peer |",
             "|---|---|" + "---|" * (len(baseline) + 1)]
    for name, stack in result["stacks"].items():
        peer = stack["fastest_peer"]
        cells = [f"{stack[b]['ratio_to_fastest_peer']:.2f}" for b in baseline]
        lines.append(f"| {name} | {peer} ({stack[peer]['median_ms']:.2f} ms) | " + " | ".join(cells)
                     + f" | {stack['flowlib']['ratio_to_fastest_peer']:.2f} |")
    return "\n".join(lines)


def before_after(result: dict) -> dict:
    """Per row: training and evaluation ratios after (this code) and before (the baseline's rows,
    over the baseline's own no-flow row), and the FLOP floors of this code."""
    rows = result["rows"]
    baseline = {name.split("@")[1] for name in rows if "@" in name}
    out = {}
    for name, r in rows.items():
        if "@" in name:
            continue
        entry = {"label": r["label"], "ratio": r["ratio"], "flop_ratio": r["flop_ratio"]}
        if "eval_ratio" in r:
            entry.update(eval_ratio=r["eval_ratio"], eval_flop_ratio=r["eval_flop_ratio"])
        for b in baseline:
            old, old_none = rows[f"{name}@{b}"], rows[f"none@{b}"]
            entry["ratio_before"] = old["ratio"] / old_none["ratio"]
            entry["flop_ratio_before"] = old["flop_ratio"]
            if "eval_ratio" in r:
                entry["eval_ratio_before"] = old["eval_ratio"] / old_none["eval_ratio"]
                entry["eval_flop_ratio_before"] = old["eval_flop_ratio"]
        out[name] = entry
    return out


def cost_table(result: dict) -> str:
    rows = before_after(result)
    before = any("ratio_before" in r for r in rows.values())
    lines = ["| row | training: before | after | FLOP floor | after / floor "
             "| evaluation: before | after | FLOP floor | after / floor |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows.values():
        b = f"{r['ratio_before']:.2f}" if before else "-"
        eb = f"{r['eval_ratio_before']:.2f}" if before and "eval_ratio_before" in r else "-"
        ev = "- | - | -"
        if "eval_ratio" in r:
            ev = (f"{r['eval_ratio']:.2f} | {r['eval_flop_ratio']:.2f} | "
                  f"{r['eval_ratio'] / r['eval_flop_ratio']:.2f}")
        lines.append(f"| {r['label']} | {b} | {r['ratio']:.2f} | {r['flop_ratio']:.2f} | "
                     f"{r['ratio'] / r['flop_ratio']:.2f} | {eb} | {ev} |")
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
