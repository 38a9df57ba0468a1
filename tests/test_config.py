"""One training config (flowlib.training.config.TrainConfig) for the command line and the tables:
every row of every experiment table can be run by ``python -m flowlib train``."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

from flowlib.cli import parser
from flowlib.experiments import tables
from flowlib.training.config import TrainConfig

REPO = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.parent.name for p in (REPO / "experiments").glob("*/protocol.json"))


def _rows():
    for name in EXPERIMENTS:
        protocol, rows = tables.load_experiment(REPO / "experiments" / name)
        for row_name, row in rows.items():
            yield f"{name}/{row_name}", protocol, row


def _option(key: str) -> str:
    return "--sylvester-M" if key == "sylvester_M" else "--" + key.replace("_", "-")


def _cli_config(argv: list[str]) -> dict:
    return TrainConfig.from_args(parser().parse_args(argv)).to_dict()


@pytest.mark.parametrize("label,protocol,row", list(_rows()), ids=[r[0] for r in _rows()])
def test_the_cli_reproduces_every_row_of_every_table(label, protocol, row, tmp_path):
    """The row's own settings written as options, by hand, give the config the table runner trains."""
    out = tmp_path / "run"
    argv = ["train", "--seed", "3", "--out", str(out), "--resume"]
    for key, value in {**protocol["train"], **{k: v for k, v in row.items() if k in tables.ROW_KEYS}}.items():
        if key == "amortized":
            argv.append("--amortized" if value else "--static")
        elif isinstance(value, list):
            argv += [_option(key), *map(str, value)]
        else:
            argv += [_option(key), str(value)]
    expected = tables.row_config(protocol, row, 3, out)
    assert _cli_config(argv) == expected
    # and the arguments the table runner gives for the row (every setting spelled out)
    assert _cli_config(tables.row_argv(protocol, row, 3, out)) == expected


def test_defaults_live_in_one_place():
    cli = _cli_config(["train", "--data", "mnist", "--flow", "planar", "--epochs", "2", "--out", "x"])
    assert cli == TrainConfig(data="mnist", flow="planar", epochs=2, out="x").to_dict()
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata["help"], f.name  # every setting is documented in --help


def test_json_round_trip_and_bad_settings():
    config = TrainConfig(data="mnist", flow="sylvester", epochs=3, out="o", sylvester_M=7, hidden=[5, 6],
                         valid_seed=1)
    assert TrainConfig.from_json(config.to_json()) == config
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown training settings \['sylvester_m'\]"):
        TrainConfig.from_dict({**config.to_dict(), "sylvester_m": 3})
    with pytest.raises(ValueError, match="flow must be one of"):
        TrainConfig(data="mnist", flow="glow", epochs=1, out="o")
    with pytest.raises(TypeError, match="required positional argument: 'out'"):
        TrainConfig(data="mnist", flow="none", epochs=1)
    assert TrainConfig(data="mnist", flow="none", epochs=1, out="o").flow_length == 0


def test_threads_are_one_option_of_every_subcommand():
    p = parser()
    for argv in (["train", "--data", "mnist", "--flow", "none", "--epochs", "1", "--out", "o"],
                 ["evaluate", "d"], ["run", "e"], ["table", "e"], ["status", "e"], ["figure3", "--out", "o"],
                 ["fits2d", "--out", "o"], ["posterior2d"]):
        assert p.parse_args([*argv, "--threads", "2"]).threads == 2, argv
    assert p.parse_args(["figure3", "--out", "o"]).threads == 1  # the drivers' own default
    assert p.parse_args(["run", "e"]).threads is None
    with pytest.raises(SystemExit):
        p.parse_args(["run", "e", "--threads", "0"])


def test_a_subcommand_is_imported_only_when_used():
    import subprocess
    import sys

    code = ("import sys; from flowlib.cli import parser; parser(only='train').parse_args(['train', '--data', "
            "'mnist', '--flow', 'none', '--epochs', '1', '--out', 'o']); "
            "print(sorted(m for m in sys.modules if m.startswith('flowlib.experiments')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]"
