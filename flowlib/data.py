"""Data sets of the book: statically binarized MNIST, MNIST and Fashion-MNIST.

Every data set comes back as ``x``: float32 ``(N, 784)`` in ``[0, 1]`` and ``labels``: int64 ``(N,)``
(``None`` for binarized MNIST, which has no labels). Splits:

* ``binarized-mnist``: the Larochelle & Murray (2011) files, 50,000 train / 10,000 valid / 10,000 test.
* ``mnist``, ``fashion-mnist``: ``train`` is the first 50,000 images of the official 60,000-image
  training set, ``valid`` the last 10,000 of it, ``test`` the official 10,000-image test set.

Files are read from the data root (:func:`data_root`, set by ``$FLOWLIB_DATA``), which may be
read-only; parsed caches and extracted files go to :func:`cache_dir` (``$FLOWLIB_CACHE``).
torchvision is only imported when MNIST or Fashion-MNIST is loaded.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import stat
import tempfile
import urllib.request
import warnings

import numpy as np
import torch

DATASETS = ("binarized-mnist", "mnist", "fashion-mnist")
SPLITS = ("train", "valid", "test")
X_DIM = 784  # every data set: 28 x 28 pixels, flattened

BINARIZED_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_{split}.amat"
BINARIZED_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
BINARIZED_SHA256 = {  # of the original files (their md5 sums match the data README)
    "train": "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    "valid": "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    "test": "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
}
TORCHVISION_CLASSES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
RAW_FILES = (  # what torchvision reads from <root>/<Class>/raw/, each also as .gz
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)
N_TRAIN = 50_000  # official training images before this index are "train", the rest "valid"


def data_root() -> pathlib.Path:
    """The data root: ``$FLOWLIB_DATA`` if set, else ``~/.cache/flowlib/data``."""
    env = os.environ.get("FLOWLIB_DATA")
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "flowlib" / "data"


def cache_dir() -> pathlib.Path:
    """The (created on demand) cache folder: ``$FLOWLIB_CACHE`` if set, else ``~/.cache/flowlib/cache``."""
    env = os.environ.get("FLOWLIB_CACHE")
    path = pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "flowlib" / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load(name: str, split: str, root=None, download: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Load one split of a data set as ``(x, labels)``; see the module docstring.

    ``root`` defaults to :func:`data_root`. Missing files are downloaded if ``download`` is true;
    otherwise, or when that fails, a :class:`FileNotFoundError` says what is missing and where.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    root = data_root() if root is None else pathlib.Path(root).expanduser()
    if name == "binarized-mnist":
        return _load_binarized(split, root, download), None
    return _load_torchvision(name, split, root, download)


def dynamic_binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh Bernoulli sample with pixel probabilities ``x`` (dynamic binarization)."""
    return torch.bernoulli(x, generator=generator)


# ------------------------------------------------------------------ helpers


def _writable(path: pathlib.Path) -> bool:
    """Whether ``path`` (or its nearest existing parent) can be written to. Write permission
    bits are honoured even for root, who could otherwise write into a read-only share."""
    path = pathlib.Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    write_bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & write_bits)


def _missing(what: str, files, folder: pathlib.Path, how: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what}: missing {', '.join(files)} in {folder}. The data root is $FLOWLIB_DATA (default "
        f"~/.cache/flowlib/data): set FLOWLIB_DATA to a folder holding the data, or {how}"
    )


def _atomic_tempfile(folder: pathlib.Path, name: str):
    return tempfile.NamedTemporaryFile(dir=folder, prefix=f".{name}.", suffix=".part", delete=False)


# ------------------------------------------------------------------ binarized MNIST


def _load_binarized(split: str, root: pathlib.Path, download: bool) -> torch.Tensor:
    path = root / "binarized_mnist" / f"binarized_mnist_{split}.amat"
    if not path.is_file():
        url = BINARIZED_URL.format(split=split)
        how = f"download {url} into that folder (load(..., download=True) does so when online)."
        if not download:
            raise _missing("binarized-mnist", [path.name], path.parent, how)
        try:
            _download(url, path, BINARIZED_SHA256[split])
        except OSError as err:  # not writable, network error (URLError), disk full...
            raise _missing("binarized-mnist", [path.name], path.parent, f"{how} ({err})") from err
    n = BINARIZED_SIZES[split]
    st = path.stat()
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    cache = cache_dir() / "binarized_mnist"
    cached = cache / f"{split}-{key}-{st.st_size}-{st.st_mtime_ns}.npy"  # source's path, size and mtime
    try:
        packed = np.load(cached, allow_pickle=False)
        if packed.shape == (n, 98) and packed.dtype == np.uint8:
            return torch.from_numpy(np.unpackbits(packed, axis=1)).to(torch.float32)
    except (OSError, ValueError, EOFError):
        pass
    bits = _parse_amat(path.read_bytes(), n, path)
    _write_cache(np.packbits(bits, axis=1), cached)
    for old in cache.glob(f"{split}-{key}-*.npy"):  # caches of earlier versions of this file
        if old != cached:
            old.unlink(missing_ok=True)
    return torch.from_numpy(bits).to(torch.float32)


def _write_cache(array: np.ndarray, dest: pathlib.Path) -> None:
    """Save ``array`` to ``dest`` atomically; a failure only costs a warning (the cache is optional)."""
    tmp = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _atomic_tempfile(dest.parent, dest.name) as tmp:
            np.save(tmp, array)
        os.replace(tmp.name, dest)
    except OSError as err:
        warnings.warn(f"flowlib.data: could not write the cache {dest}: {err}", stacklevel=3)
    finally:
        if tmp is not None:
            pathlib.Path(tmp.name).unlink(missing_ok=True)


def _parse_amat(data: bytes, n: int, path) -> np.ndarray:
    """Parse ``n`` lines of 784 space-separated '0'/'1' into a uint8 ``(n, 784)`` array."""
    a = np.frombuffer(data, dtype=np.uint8)
    if a.size == n * 1568:  # fast path for the original layout: "d d ... d\n", 1568 bytes a line
        rows = a.reshape(n, 1568)
        digits = rows[:, 0:1567:2]
        if ((digits | 1) == 49).all() and (rows[:, 1:1567:2] == 32).all() and (rows[:, 1567] == 10).all():
            return digits - 48
    n_space = sum(np.count_nonzero(a == c) for c in b" \t\r\n")
    n_digit = np.count_nonzero((a | 1) == 49)
    if n_space + n_digit != a.size:
        raise ValueError(f"{path}: corrupt file, {a.size - n_space - n_digit} bytes are neither '0', '1' "
                         f"nor white space; delete it (it is downloaded again) or replace it")
    digit = (a | 1) == 49
    newlines = np.flatnonzero(a == 10)
    starts = np.concatenate(([0], newlines + 1))
    per_line = np.add.reduceat(digit, starts[starts < a.size], dtype=np.int64)
    per_line = per_line[per_line > 0]
    if per_line.size != n or (per_line != 784).any():
        raise ValueError(f"{path}: truncated or corrupt file, expected {n} lines of 784 values, found "
                         f"{per_line.size} lines with {n_digit} values; delete it (it is downloaded again) "
                         f"or replace it")
    return (a[digit] - 48).reshape(n, 784)


def _download(url: str, dest: pathlib.Path, sha256: str) -> None:
    """Download ``url`` to ``dest`` through a temporary file, checking its sha256."""
    from tqdm.auto import tqdm

    if not _writable(dest.parent):
        raise PermissionError(f"cannot download into {dest.parent}, it is not writable")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _atomic_tempfile(dest.parent, dest.name)
    digest = hashlib.sha256()
    try:
        with tmp, urllib.request.urlopen(url, timeout=60) as response:
            size = response.headers.get("Content-Length")
            with tqdm(total=int(size) if size else None, unit="B", unit_scale=True, desc=dest.name,
                      disable=not size) as bar:
                while chunk := response.read(1 << 20):
                    tmp.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != sha256:
            raise RuntimeError(f"download of {url} is corrupt: sha256 {digest.hexdigest()}, "
                               f"expected {sha256}; nothing was saved, try again")
        os.replace(tmp.name, dest)
    finally:
        pathlib.Path(tmp.name).unlink(missing_ok=True)


# ------------------------------------------------------------------ MNIST, Fashion-MNIST


def _torchvision_root(cls_name: str, root: pathlib.Path) -> pathlib.Path:
    """A root for torchvision: ``root`` itself if it holds the extracted files, else a mirror in the
    cache with links (or copies) of its files, where torchvision can extract (and download): the data
    root is never written to, writable or not (torchvision would extract the ``.gz`` files there)."""
    raw = root / cls_name / "raw"
    if all((raw / f).is_file() for f in RAW_FILES):
        return root
    # one mirror per data root: files linked from one root must never answer for another
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    mirror = cache_dir() / "torchvision" / key / cls_name / "raw"
    mirror.mkdir(parents=True, exist_ok=True)
    for name in RAW_FILES + tuple(f + ".gz" for f in RAW_FILES):
        src, dst = raw / name, mirror / name
        if dst.is_symlink() and not dst.exists():
            dst.unlink()  # dangling link to a file that went away
        if src.is_file() and not dst.exists():
            try:
                dst.symlink_to(src.resolve())
            except OSError:
                shutil.copy2(src, dst)
    return mirror.parent.parent


def _load_torchvision(name: str, split: str, root: pathlib.Path, download: bool):
    try:
        import torchvision.datasets
    except ImportError as err:
        raise ImportError(f"{name} needs torchvision: pip install 'flowlib[data]'") from err
    cls_name = TORCHVISION_CLASSES[name]
    tv_root = _torchvision_root(cls_name, root)
    raw = tv_root / cls_name / "raw"
    missing = [f"{f}(.gz)" for f in RAW_FILES if not (raw / f).is_file() and not (raw / f"{f}.gz").is_file()]
    how = "call load(..., download=True) with a network: torchvision then downloads them."
    if missing and not download:
        raise _missing(name, missing, root / cls_name / "raw", how)
    try:  # with every file present torchvision downloads nothing, at most extracts the .gz files
        ds = getattr(torchvision.datasets, cls_name)(str(tv_root), train=split != "test", download=True)
    except (RuntimeError, OSError) as err:
        files = missing or RAW_FILES
        raise _missing(name, files, root / cls_name / "raw", f"{how} (torchvision: {err})") from err
    expected = 10_000 if split == "test" else 60_000
    if ds.data.shape != (expected, 28, 28) or ds.targets.shape != (expected,):
        raise RuntimeError(f"{name}: unexpected data shape {tuple(ds.data.shape)} in {raw}; delete the "
                           f"extracted files there so that they are extracted again")
    rows = {"train": slice(0, N_TRAIN), "valid": slice(N_TRAIN, None), "test": slice(None)}[split]
    x = ds.data[rows].reshape(-1, 784).to(torch.float32).div_(255)
    return x, ds.targets[rows].to(torch.int64).clone()
