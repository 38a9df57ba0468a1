"""Training and evaluation of flow VAEs: KL warm-up, early stopping on the validation
ELBO, atomic checkpoints, resumable, reproducible for a given seed on a given machine.

A run lives in a folder ``out``: ``metrics.json`` (the config, one record per epoch,
the final ``test_neg_elbo`` and, after :func:`evaluate`, ``test_nll``), ``model.pt``
(the best model by validation ELBO) and ``last.pt`` (everything ``--resume`` needs).
"""

from __future__ import annotations

import json
import math
import pathlib
import time

import torch
from tqdm.auto import tqdm

from .. import data as datasets
from ..flows.registry import build
from ..flows.stacking import stack_optimizer_state
from ..flows.used_outputs import narrow_optimizer_state
from ..model.encoders import Decoder, Encoder, feature_size
from ..model.posterior import FlowPosterior
from ..model.vae import VAE
from .checkpoint import atomic_save, atomic_write_json, load_checkpoint
from .records import git_commit, machine
from .seeding import seed_everything

__all__ = ["train", "train_epoch", "evaluate", "build_model", "make_optimizer", "TrainingDiverged"]

# Settings that define the model; everything else in the config is about training.
MODEL_KEYS = ("flow", "flow_length", "amortized", "latent_dim", "hidden", "arch", "sylvester_variant")
# Optional model settings (absent from older configs; None means the default).
OPTIONAL_MODEL_KEYS = ("sylvester_M", "sylvester_reflections")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite (at ``batch``, counted from 1, of an epoch); :func:`train` keeps
    the last good checkpoint."""

    def __init__(self, message: str, batch: int | None = None):
        super().__init__(message)
        self.batch = batch


def make_optimizer(model: torch.nn.Module, config: dict) -> torch.optim.Optimizer:
    """The run's optimizer (``config["optimizer"]``, ``config["lr"]``) over ``model``'s parameters.

    Adam runs its multi-tensor (``foreach``) implementation, which PyTorch picks by default only on
    CUDA: on CPU it updates all parameter tensors in a few batched operations instead of one
    tensor at a time (a stack of 80 planar layers has 240 small tensors), and its updates are
    bitwise identical to the single-tensor default (``tests/test_optimizer.py``), so runs started
    with either resume with the same numbers. ``fused=True`` would be faster still but rounds
    differently. Adamax keeps PyTorch's default.
    """
    opt_cls = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}[config["optimizer"]]
    optimizer = opt_cls(model.parameters(), lr=config["lr"])
    _set_foreach(optimizer, config)
    return optimizer


def _set_foreach(optimizer: torch.optim.Optimizer, config: dict) -> None:
    if config["optimizer"] == "adam":
        for group in optimizer.param_groups:
            group["foreach"] = True


def flow_options(config: dict) -> dict:
    """The registry options (:func:`flowlib.flows.registry.build`) a run's config sets for its flow."""
    if config["flow"] != "sylvester":
        return {}
    return {"variant": config["sylvester_variant"], "M": config.get("sylvester_M"),
            "n_reflections": config.get("sylvester_reflections")}


def build_model(config: dict) -> VAE:
    """The VAE described by a run's config (the keys of ``MODEL_KEYS``)."""
    hidden, arch, z_dim = tuple(config["hidden"]), config["arch"], config["latent_dim"]
    h_dim = feature_size(hidden, arch)
    # built in this order (flow, encoder, decoder): a seed gives the parameters it always gave
    flow = build(config["flow"], z_dim, context_dim=h_dim if config["amortized"] else None,
                 length=config["flow_length"], **flow_options(config))
    x_dim = datasets.X_DIM
    encoder = Encoder(x_dim, z_dim, hidden, arch)
    return VAE.from_parts(encoder, Decoder(x_dim, z_dim, hidden[::-1], arch), FlowPosterior(flow))


def load_split(config: dict, split: str, subset: int | None = None) -> torch.Tensor:
    """A split as float pixels; grey-level data sets are binarized once with a fixed seed for
    validation and test (so every evaluation sees the same 0/1 images) and left grey for training
    when ``binarize == "dynamic"`` (a fresh Bernoulli sample per epoch).

    ``subset`` takes a fixed random subset (the same for every run), not the first images: the
    binarized-MNIST test file is sorted by digit, so its first 1000 images are all zeros."""
    x, _ = datasets.load(config["data"], split)
    if subset is not None:
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:subset]]
    if config["data"] != "binarized-mnist" and (split != "train" or config["binarize"] == "static"):
        x = datasets.dynamic_binarize(x, torch.Generator().manual_seed(1234 + len(split)))
    return x


@torch.no_grad()
def mean_elbo(model: VAE, x: torch.Tensor, batch_size: int, device, noise_seed: int | None = None,
              per_image: bool = False) -> dict:
    """Mean ELBO, reconstruction and KL over ``x`` (single-sample estimates).

    With ``noise_seed`` the posterior samples are drawn from a generator seeded with it, on a
    forked RNG (the caller's random stream is left untouched): every call then uses the same
    noise, so two epochs' estimates differ only through the parameters (common random numbers),
    which is what an early-stopping rule needs to compare them. ``per_image=True`` adds the
    per-image ELBO as ``"elbo_per_image"``.
    """
    model.eval()
    totals = {"elbo": 0.0, "reconstruction": 0.0, "kl": 0.0}
    per = []
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=noise_seed is not None):
        if noise_seed is not None:
            torch.manual_seed(noise_seed)
        for i in range(0, len(x), batch_size):
            e = model.elbo(x[i : i + batch_size].to(device))
            for key in totals:
                totals[key] += getattr(e, key).sum().item()
            if per_image:
                per.append(e.elbo.double().cpu())
    out = {key: v / len(x) for key, v in totals.items()}
    if per_image:
        out["elbo_per_image"] = torch.cat(per)
    return out


def train_epoch(model: VAE, optimizer, train_x: torch.Tensor, batch_size: int, shuffle: torch.Generator, *,
                step: int = 0, beta=None, dynamic: bool = False, device="cpu",
                desc: str = "epoch", progress: bool = True) -> tuple[float, int, float]:
    """One epoch of ELBO training: ``train_x`` shuffled by ``shuffle``, in minibatches of
    ``batch_size`` (the last one smaller), one optimizer step per minibatch on ``-ELBO_beta``,
    ``beta(step)`` for the run's step count ``step`` (a KL warm-up; 1 when ``beta`` is None). With
    ``dynamic`` each minibatch is binarized afresh (a Bernoulli sample drawn from ``shuffle``).
    The optimizer trains what it was given (a frozen part of ``model`` stays as it is).

    Returns the summed ELBO of the epoch's images, the step count after it and the last ``beta``;
    raises :class:`TrainingDiverged` (naming the batch) on a non-finite loss, before that step."""
    model.train()
    total, beta_t = 0.0, 1.0
    perm = torch.randperm(len(train_x), generator=shuffle)
    bar = tqdm(range(math.ceil(len(train_x) / batch_size)), desc=desc, leave=False, disable=not progress)
    for b in bar:
        x = train_x[perm[b * batch_size : (b + 1) * batch_size]]
        if dynamic:
            x = datasets.dynamic_binarize(x, shuffle)
        x = x.to(device)
        beta_t = 1.0 if beta is None else beta(step)
        e = model.elbo(x)
        loss = e.loss(beta_t)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"non-finite loss ({loss.item()})", batch=b + 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        total += e.elbo.detach().sum().item()
        bar.set_postfix(elbo=f"{e.elbo.mean().item():.2f}", beta=f"{beta_t:.2f}")
    return total, step, beta_t


def train(config, progress: bool = True) -> dict:
    """Train the VAE of ``config`` (a :class:`~flowlib.training.config.TrainConfig` or its dict) into
    ``config["out"]``.

    Returns the metrics written to ``metrics.json``. Raises :class:`TrainingDiverged` on a
    non-finite loss, after writing the metrics with the reason.
    """
    if not isinstance(config, dict):
        config = config.to_dict()
    out = pathlib.Path(config["out"])
    device = torch.device(config["device"])
    train_x = load_split(config, "train", config["subset"])
    valid_x = load_split(config, "valid")
    test_x = load_split(config, "test")
    out.mkdir(parents=True, exist_ok=True)

    seed_everything(config["seed"])
    model = build_model(config).to(device)
    optimizer = make_optimizer(model, config)
    shuffle = torch.Generator().manual_seed(config["seed"])
    n_batches = math.ceil(len(train_x) / config["batch_size"])
    warmup_steps = config["warmup"] * n_batches

    metrics = {
        "config": config,
        "machine": machine(),
        "epochs": [],
        "best_epoch": None,
        "best_valid_elbo": None,
        "status": "running",
    }
    start, step, stale = 0, 0, 0
    if config["resume"] and (out / "last.pt").exists():
        state = load_checkpoint(out / "last.pt", map_location=device)
        model.load_state_dict(state["model"])
        # optimizer state saved by older code: a run of static layers' moments per layer
        # (flows/stacking.py), a Sylvester head's moments for outputs it no longer computes
        # (flows/used_outputs.py)
        saved = stack_optimizer_state(state["optimizer"], model) or state["optimizer"]
        optimizer.load_state_dict(narrow_optimizer_state(saved, model) or saved)
        _set_foreach(optimizer, config)  # a checkpoint carries the flag of the code that wrote it
        shuffle.set_state(state["shuffle_rng"].cpu())  # map_location moved it to the device
        torch.set_rng_state(state["torch_rng"].cpu())
        start, step, stale = state["epoch"], state["step"], state["stale"]
        previous = json.loads((out / "metrics.json").read_text())
        metrics.update({k: previous[k] for k in ("epochs", "best_epoch", "best_valid_elbo")})
        metrics["code"] = previous.get("code", [])
    # The code, device and machine that trained each stretch of epochs (a resumed run may continue
    # under a later commit, or on another machine; ``machine`` above is the latest stretch's).
    metrics.setdefault("code", []).append({"from_epoch": start + 1, "git_commit": git_commit(),
                                           "device": str(device), "machine": metrics["machine"]})

    dynamic = config["data"] != "binarized-mnist" and config["binarize"] == "dynamic"
    for epoch in range(start, config["epochs"]):
        t0 = time.perf_counter()
        try:
            total, step, beta = train_epoch(
                model, optimizer, train_x, config["batch_size"], shuffle, step=step,
                beta=(lambda s: min(1.0, s / warmup_steps)) if warmup_steps else None, dynamic=dynamic,
                device=device, desc=f"epoch {epoch + 1}/{config['epochs']}", progress=progress)
        except TrainingDiverged as err:
            metrics["status"] = (f"stopped: {err} at epoch {epoch + 1}, batch {err.batch}; "
                                 f"the last good checkpoint is kept in {out / 'model.pt'}")
            atomic_write_json(metrics, out / "metrics.json")
            raise TrainingDiverged(metrics["status"]) from None
        seconds = time.perf_counter() - t0
        valid = mean_elbo(model, valid_x, 500, device, config.get("valid_seed"))
        record = {
            "epoch": epoch + 1,
            "train_elbo": total / len(train_x),
            "valid_elbo": valid["elbo"],
            "valid_reconstruction": valid["reconstruction"],
            "valid_kl": valid["kl"],
            "beta": beta,
            "seconds": seconds,
        }
        metrics["epochs"].append(record)
        if metrics["best_valid_elbo"] is None or valid["elbo"] > metrics["best_valid_elbo"]:
            metrics["best_valid_elbo"], metrics["best_epoch"], stale = valid["elbo"], epoch + 1, 0
            atomic_save({"model": model.state_dict(), "config": config}, out / "model.pt")
        elif epoch + 1 > config["warmup"]:
            stale += 1  # patience counts only epochs after the KL warm-up (beta = 1)
        atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "shuffle_rng": shuffle.get_state(),
                "torch_rng": torch.get_rng_state(),
                "epoch": epoch + 1,
                "step": step,
                "stale": stale,
            },
            out / "last.pt",
        )
        atomic_write_json(metrics, out / "metrics.json")
        if progress:
            tqdm.write(
                f"epoch {epoch + 1}: train ELBO {record['train_elbo']:.2f}, valid ELBO {valid['elbo']:.2f}, "
                f"{seconds:.1f} s"
            )
        if stale >= config["patience"]:
            metrics["status"] = f"early stop: no validation improvement in {stale} epochs"
            break
    else:
        metrics["status"] = "completed"

    model.load_state_dict(load_checkpoint(out / "model.pt", map_location=device)["model"])
    test = mean_elbo(model, test_x, 500, device, config.get("valid_seed"))
    metrics.update(
        test_neg_elbo=-test["elbo"], test_reconstruction=test["reconstruction"], test_kl=test["kl"]
    )
    atomic_write_json(metrics, out / "metrics.json")
    return metrics


def evaluation_images(n_test: int, subset: int | None = None) -> torch.Tensor:
    """The indices of an evaluation's images among ``n_test`` test images: the first ``subset`` of
    one fixed permutation (so every row is evaluated on the same images, and a smaller subset is
    the head of a larger one), or every image in file order for ``subset=None``."""
    if subset is None:
        return torch.arange(n_test)
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(0))[:subset]


def test_indices(config: dict, subset: int | None = None) -> torch.Tensor:
    """The indices into the test split of the images :func:`load_split` returns for ``subset``
    (:func:`evaluation_images` of the data set's test split)."""
    return evaluation_images(len(datasets.load(config["data"], "test")[0]), subset)


PER_IMAGE_FILE = "test_per_image.npz"


def read_metrics(run_dir) -> dict:
    """The ``metrics.json`` of a run folder, checked: valid JSON with a ``config`` that has every
    model setting; otherwise ``ValueError`` naming the file and what is missing."""
    path = pathlib.Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run: expected {path}")
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    config = metrics.get("config") if isinstance(metrics, dict) else None
    if not isinstance(config, dict):
        raise ValueError(f"{path} has no 'config': it was not written by flowlib's train")
    missing = [k for k in (*MODEL_KEYS, "data", "seed") if k not in config]
    if missing:
        raise ValueError(f"{path}: the config lacks {missing}; was it written by another version of flowlib?")
    return metrics


def evaluate(
    run_dir,
    importance_samples: int = 5000,
    subset: int | None = None,
    batch_size: int = 100,
    device: str = "cpu",
    progress: bool = True,
    save_every: float = 120.0,
) -> dict:
    """Add the importance-sampled test NLL (Burda et al. 2016, eq. 8) of the run's best model to
    its ``metrics.json``: ``test_nll`` (nats, minus the mean of log p(x)), ``test_nll_stderr``, and
    write the per-image values to ``test_per_image.npz`` (``index`` into the test split,
    ``log_px``, the single-sample ``elbo`` on the same image), so that rows evaluated on the same
    images can be compared image by image (a paired difference).

    Batch ``i`` draws its samples from a generator seeded with ``(seed, i)``, so the result does not
    depend on how the work was split: an interrupted evaluation resumes from the partial file it
    saves every ``save_every`` seconds and gives the numbers an uninterrupted one would.
    """
    import numpy as np

    run_dir = pathlib.Path(run_dir)
    metrics = read_metrics(run_dir)
    config = metrics["config"]
    model = build_model(config).to(device)
    model.load_state_dict(load_checkpoint(run_dir / "model.pt", map_location=device)["model"])
    model.eval()
    x = load_split(config, "test", subset)
    index = test_indices(config, subset)
    partial = run_dir / f".{PER_IMAGE_FILE}.k{importance_samples}.n{len(x)}.partial.npz"
    log_px = torch.full((len(x),), math.nan, dtype=torch.float64)
    done = 0
    if partial.is_file():
        saved = np.load(partial)
        done = int(saved["done"])
        log_px[:done] = torch.from_numpy(saved["log_px"][:done])
    last_save = time.perf_counter()
    starts = range(0, len(x), batch_size)
    bar = tqdm(starts, desc=f"importance sampling (K = {importance_samples})", disable=not progress,
               initial=done // batch_size, total=len(starts), unit="batch")
    devices = [device] if torch.device(device).type == "cuda" else []
    for i in range(done, len(x), batch_size):
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(config["seed"] * 1_000_003 + i // batch_size)
            log_px[i : i + batch_size] = model.log_likelihood(x[i : i + batch_size].to(device),
                                                             importance_samples).double().cpu()
        done = min(i + batch_size, len(x))
        bar.update(1)
        if time.perf_counter() - last_save > save_every and done < len(x):
            _atomic_npz(partial, done=np.array(done), log_px=log_px.numpy())
            last_save = time.perf_counter()
    bar.close()
    same_images = mean_elbo(model, x, batch_size, device, noise_seed=config["seed"], per_image=True)
    _atomic_npz(run_dir / PER_IMAGE_FILE, index=index.numpy().astype(np.int32), log_px=log_px.numpy(),
                elbo=same_images["elbo_per_image"].numpy())
    metrics.update(
        test_nll=-log_px.mean().item(),
        test_nll_stderr=log_px.std().item() / math.sqrt(len(x)),
        test_nll_importance_samples=importance_samples,
        test_nll_examples=len(x),
        test_nll_subset=subset,
        test_neg_elbo_same_images=-same_images["elbo"],
        test_nll_git_commit=git_commit(),
    )
    atomic_write_json(metrics, run_dir / "metrics.json")
    partial.unlink(missing_ok=True)
    return metrics


def _atomic_npz(path: pathlib.Path, **arrays) -> None:
    """``numpy.savez_compressed`` through a temporary file renamed over ``path``."""
    import numpy as np

    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
