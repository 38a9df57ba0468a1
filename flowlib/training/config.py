"""The configuration of a training run: one dataclass with every default, its JSON round trip, and
the command line built from its fields.

:class:`TrainConfig` is the one description of a run. ``python -m flowlib train`` builds it from its
arguments (:meth:`TrainConfig.add_arguments`, :meth:`TrainConfig.from_args`), the experiment tables
build it from a protocol and a row (:func:`flowlib.experiments.tables.row_config`), and
:meth:`TrainConfig.to_argv` gives the ``python -m flowlib train`` arguments of any config, so every
row of every table can be run from the command line. :func:`flowlib.training.loop.train` takes its
:meth:`~TrainConfig.to_dict`, which is what ``metrics.json`` stores under ``config``.

The runtime options every command shares (``--threads``) are :func:`runtime_parser` and
:func:`apply_runtime`: defined and applied once, for every subcommand.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
from dataclasses import dataclass, field

from ..data import DATASETS
from ..flows.registry import FLOWS
from ..flows.sylvester import VARIANTS

__all__ = ["TrainConfig", "runtime_parser", "apply_runtime", "int_at_least", "positive_float"]


def int_at_least(low: int):
    """An argparse type: an int >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _option(default=dataclasses.MISSING, *, help: str, type=None, choices=None, nargs=None, flag=None):
    """A field with what its command-line option needs (``type`` parses one value from text)."""
    meta = {"help": help, "type": type, "choices": choices, "nargs": nargs, "flag": flag}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Every setting of a training run (the keys of ``metrics.json``'s ``config``)."""

    data: str = _option(help="the data set", choices=DATASETS)
    flow: str = _option(help="the posterior flow (flowlib.flows.registry)", choices=FLOWS)
    epochs: int = _option(help="the most epochs to train", type=int_at_least(1))
    out: str = _option(help="run folder (created)")
    flow_length: int = _option(1, help="K, the number of flow layers (0 only with --flow none)",
                               type=int_at_least(0))
    amortized: bool = _option(True, help="flow parameters predicted from the encoder's features h "
                              "(--amortized, the default) or free (--static)", flag="amortized")
    sylvester_variant: str = _option("orthogonal", help="Sylvester's Q", choices=VARIANTS)
    sylvester_M: int | None = _option(None, help="Sylvester orthogonal: columns of Q (default: latent-dim)",
                                      type=int_at_least(1))
    sylvester_reflections: int | None = _option(None, help="Sylvester householder: reflections per Q "
                                                "(default: latent-dim)", type=int_at_least(1))
    latent_dim: int = _option(40, help="z's dimension", type=int_at_least(1))
    hidden: list = _option([300, 300], help="MLP hidden sizes of the encoder (the decoder mirrors them)",
                           type=int_at_least(1), nargs="+")
    arch: str = _option("mlp", help="encoder and decoder networks", choices=("mlp", "conv"))
    batch_size: int = _option(100, help="images per update", type=int_at_least(1))
    lr: float = _option(1e-3, help="learning rate", type=positive_float)
    optimizer: str = _option("adam", help="the optimiser", choices=("adam", "adamax"))
    warmup: int = _option(10, help="KL warm-up epochs (beta 0 -> 1)", type=int_at_least(0))
    patience: int = _option(50, help="stop after this many epochs without a better validation ELBO",
                            type=int_at_least(1))
    binarize: str = _option("dynamic", help="mnist / fashion-mnist: fresh Bernoulli sample per epoch, or "
                            "one fixed sample", choices=("dynamic", "static"))
    subset: int | None = _option(None, help="train on a fixed random subset of N training images",
                                 type=int_at_least(1))
    seed: int = _option(0, help="the seed of the run", type=int_at_least(0))
    valid_seed: int | None = _option(None, help="the seed of the validation ELBO's posterior noise (the same "
                                     "at every epoch: common random numbers); none: fresh noise",
                                     type=int_at_least(0))
    device: str = _option("cpu", help="torch device")
    resume: bool = _option(False, help="continue the run in --out from its last epoch", flag="resume")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value, choices = getattr(self, f.name), f.metadata["choices"]
            if choices is not None and value not in choices:
                raise ValueError(f"{f.name} must be one of {tuple(choices)}, got {value!r}")
        if isinstance(self.out, pathlib.Path):
            self.out = str(self.out)
        self.hidden = list(self.hidden)
        if self.flow == "none":
            self.flow_length = 0  # no flow, no layers (the tables' rows say so; the CLI's default is 1)

    # ------------------------------------------------------------ dict and JSON
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config: dict) -> TrainConfig:
        """From a dict with some or all of the fields; an unknown key is an error naming it."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; a config has {sorted(names)}")
        return cls(**config)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))

    # ------------------------------------------------------------ command line
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One option a field: ``--flow-length`` for ``flow_length``; booleans as flag pairs."""
        for f in dataclasses.fields(cls):
            meta, option = f.metadata, "--" + f.name.replace("_", "-")
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            default = None if required else (f.default if f.default_factory is dataclasses.MISSING
                                             else f.default_factory())
            if meta["flag"] == "amortized":
                g = parser.add_mutually_exclusive_group()
                g.add_argument("--amortized", dest="amortized", action="store_true", default=default,
                               help=meta["help"])
                g.add_argument("--static", dest="amortized", action="store_false",
                               help="free flow parameters")
                continue
            if meta["flag"]:
                parser.add_argument(option, dest=f.name, action="store_true", default=default,
                                    help=meta["help"])
                continue
            kwargs = {"type": meta["type"] or str, "choices": meta["choices"], "nargs": meta["nargs"]}
            if f.name == "out":
                kwargs["type"] = pathlib.Path
            if f.name == "sylvester_M":
                option = "--sylvester-M"
            parser.add_argument(option, dest=f.name, required=required, default=default,
                                help=meta["help"], **{k: v for k, v in kwargs.items() if v is not None})

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainConfig:
        """From parsed arguments (other attributes of ``args`` are ignored)."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})

    def to_argv(self) -> list[str]:
        """The arguments of ``python -m flowlib train`` that build this config (every field spelled
        out, so a later change of a default does not change the run)."""
        argv = ["train"]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            option = "--sylvester-M" if f.name == "sylvester_M" else "--" + f.name.replace("_", "-")
            if f.name == "amortized":
                argv.append("--amortized" if value else "--static")
            elif f.name == "resume":
                argv += ["--resume"] if value else []
            elif value is None:
                continue
            elif isinstance(value, list):
                argv += [option, *map(str, value)]
            else:
                argv += [option, str(value)]
        return argv


def torch_device(text: str):
    """The ``torch.device`` named by ``text`` (``cpu``, ``cuda``, ``cuda:1``...); ``ValueError`` saying
    what was expected if it names none, or names a CUDA device on a machine without one."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"expected a torch device such as cpu or cuda, got {text!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{text!r} names a CUDA device, but none is available on this machine")
    return device


def runtime_parser() -> argparse.ArgumentParser:
    """The options every command shares, as a parent parser: ``--threads``."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--threads", type=int_at_least(1), default=None,
                   help="torch CPU threads (torch.set_num_threads)")
    return p


def apply_runtime(args: argparse.Namespace) -> None:
    """Apply the shared runtime options of :func:`runtime_parser`."""
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(args.threads)
