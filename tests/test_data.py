"""Tests of flowlib.data. Those reading real data need the shared data folder: $FLOWLIB_DATA,
else ../shared/data next to the repository; they are skipped without it. Nothing is downloaded:
the network is replaced by fakes, and caches go to temporary folders."""

import gzip
import hashlib
import io
import os
import pathlib
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from flowlib import data

REPO = pathlib.Path(__file__).resolve().parents[1]
SKIP_REASON = "shared data not found: set FLOWLIB_DATA or put the data at ../shared/data"


def _shared_root():
    env = os.environ.get("FLOWLIB_DATA")
    root = pathlib.Path(env) if env else REPO.parent / "shared" / "data"
    return root if root.is_dir() else None


def _snapshot(root: pathlib.Path):
    """Every entry under root (root included) with its type, size and mtime."""
    entries = []
    for folder, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = pathlib.Path(folder, name)
            st = path.lstat()
            entries.append((str(path.relative_to(root)), stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns))
    return sorted(entries)


def _amat(bits: np.ndarray) -> bytes:
    return "".join(" ".join(map(str, row)) + "\n" for row in bits).encode()


@pytest.fixture(scope="module", autouse=True)
def cache_env(tmp_path_factory):
    """Point FLOWLIB_CACHE to a temporary folder for the whole module."""
    cache = tmp_path_factory.mktemp("flowlib-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLOWLIB_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="module")
def shared():
    root = _shared_root()
    if root is None:
        pytest.skip(SKIP_REASON)
    return root, _snapshot(root)


@pytest.fixture(scope="module")
def binarized(shared):
    """The three binarized-MNIST splits, parsed once (timed) into the module's cache."""
    root, _ = shared
    if not (root / "binarized_mnist").is_dir():
        pytest.skip(f"no binarized_mnist/ in {root}: " + SKIP_REASON)
    out = {}
    for split in data.SPLITS:
        start = time.perf_counter()
        out[split] = data.load("binarized-mnist", split, root=root, download=False)
        print(f"parse {split}: {time.perf_counter() - start:.2f} s")
    return out


@pytest.fixture
def small_valid(monkeypatch):
    """Make the binarized "valid" split 3 images long; returns (bits, file contents)."""
    monkeypatch.setitem(data.BINARIZED_SIZES, "valid", 3)
    bits = np.random.default_rng(0).integers(0, 2, size=(3, 784), dtype=np.uint8)
    return bits, _amat(bits)


# ------------------------------------------------------------------ API basics


def test_roots_follow_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWLIB_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("FLOWLIB_CACHE", str(tmp_path / "c"))
    assert data.data_root() == tmp_path / "d"
    assert data.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    monkeypatch.delenv("FLOWLIB_DATA")
    assert data.data_root() == pathlib.Path.home() / ".cache" / "flowlib" / "data"


@pytest.mark.parametrize("name, split", [("cifar10", "train"), ("mnist", "validation")])
def test_bad_name_or_split(name, split):
    with pytest.raises(ValueError, match="binarized-mnist, mnist, fashion-mnist|train, valid, test"):
        data.load(name, split)


def test_import_does_not_import_torchvision():
    code = "import sys, flowlib.data; assert 'torchvision' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_dynamic_binarize():
    x = torch.rand(200_000, generator=torch.Generator().manual_seed(0))
    a = data.dynamic_binarize(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert abs(a.mean().item() - x.mean().item()) < 0.01
    assert torch.equal(a, data.dynamic_binarize(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, data.dynamic_binarize(x, torch.Generator().manual_seed(2)))


# ------------------------------------------------------------------ binarized MNIST, real files


@pytest.mark.parametrize("split, n", [("train", 50_000), ("valid", 10_000), ("test", 10_000)])
def test_binarized_shapes_and_values(binarized, split, n):
    x, labels = binarized[split]
    assert labels is None
    assert x.shape == (n, 784) and x.dtype == torch.float32
    assert ((x == 0) | (x == 1)).all()
    assert 0.1 < x.mean().item() < 0.2  # MNIST digits: ~13% of the pixels are on


def test_binarized_second_load_comes_from_cache(binarized, shared, monkeypatch, cache_env):
    def no_parse(*args):
        raise AssertionError("parsed again instead of read from the cache")

    monkeypatch.setattr(data, "_parse_amat", no_parse)
    for split in data.SPLITS:
        start = time.perf_counter()
        x, _ = data.load("binarized-mnist", split, root=shared[0], download=False)
        print(f"cached {split}: {time.perf_counter() - start:.3f} s")
        assert torch.equal(x, binarized[split][0])
    cached = sorted(p.name for p in (cache_env / "binarized_mnist").glob("*.npy"))
    assert [n.split("-")[0] for n in cached] == ["test", "train", "valid"]
    assert (cache_env / "binarized_mnist" / cached[1]).stat().st_size < 5_000_000  # packed bits


def test_checksums_match_the_shared_files(shared):
    root = shared[0] / "binarized_mnist"
    if not root.is_dir():
        pytest.skip(f"no binarized_mnist/ in {shared[0]}")
    for split, expected in data.BINARIZED_SHA256.items():
        assert hashlib.sha256((root / f"binarized_mnist_{split}.amat").read_bytes()).hexdigest() == expected


# ------------------------------------------------------------------ binarized MNIST, fake files


def test_changed_source_is_parsed_again(small_valid, tmp_path, monkeypatch):
    bits, text = small_valid
    monkeypatch.setenv("FLOWLIB_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "binarized_mnist" / "binarized_mnist_valid.amat"
    path.parent.mkdir()
    path.write_bytes(text)
    x, _ = data.load("binarized-mnist", "valid", root=tmp_path, download=False)
    assert torch.equal(x, torch.from_numpy(bits).float())
    bits[0, 0] = 1 - bits[0, 0]  # same size, other contents, later mtime
    path.write_bytes(_amat(bits))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    x, _ = data.load("binarized-mnist", "valid", root=tmp_path, download=False)
    assert torch.equal(x, torch.from_numpy(bits).float())
    assert len(list((tmp_path / "cache" / "binarized_mnist").glob("valid-*.npy"))) == 1  # old one removed


def test_cache_write_failure_only_warns(small_valid, tmp_path, monkeypatch):
    bits, text = small_valid
    (tmp_path / "binarized_mnist").mkdir()
    (tmp_path / "binarized_mnist" / "binarized_mnist_valid.amat").write_bytes(text)

    def disk_full(*args):
        raise OSError("disk full")

    monkeypatch.setattr(data, "_atomic_tempfile", disk_full)
    with pytest.warns(UserWarning, match="could not write the cache.*disk full"):
        x, _ = data.load("binarized-mnist", "valid", root=tmp_path, download=False)
    assert torch.equal(x, torch.from_numpy(bits).float())


@pytest.mark.parametrize("cut", [1568, 100, 2000])
def test_truncated_file_raises(small_valid, tmp_path, cut):
    path = tmp_path / "binarized_mnist" / "binarized_mnist_valid.amat"
    path.parent.mkdir()
    path.write_bytes(small_valid[1][:-cut])
    with pytest.raises(ValueError, match="truncated or corrupt.*expected 3 lines of 784"):
        data.load("binarized-mnist", "valid", root=tmp_path, download=False)


def test_missing_without_download(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.load("binarized-mnist", "test", root=tmp_path, download=False)
    message = str(info.value)
    for part in ["binarized_mnist_test.amat", str(tmp_path / "binarized_mnist"), "FLOWLIB_DATA", "http://"]:
        assert part in message
    assert list(tmp_path.iterdir()) == []


class _FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def _serve(monkeypatch, payload=None, error=None):
    urls = []

    def urlopen(url, timeout=None):
        urls.append(url)
        if error is not None:
            raise error
        return _FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return urls


def test_download(small_valid, tmp_path, monkeypatch):
    bits, text = small_valid
    monkeypatch.setitem(data.BINARIZED_SHA256, "valid", hashlib.sha256(text).hexdigest())
    urls = _serve(monkeypatch, text)
    x, _ = data.load("binarized-mnist", "valid", root=tmp_path)
    assert urls == [data.BINARIZED_URL.format(split="valid")]
    assert torch.equal(x, torch.from_numpy(bits).float())
    assert [p.name for p in (tmp_path / "binarized_mnist").iterdir()] == ["binarized_mnist_valid.amat"]


def test_download_checksum_mismatch_leaves_nothing(small_valid, tmp_path, monkeypatch):
    _serve(monkeypatch, small_valid[1])
    with pytest.raises(RuntimeError, match="sha256"):
        data.load("binarized-mnist", "valid", root=tmp_path)
    assert list((tmp_path / "binarized_mnist").iterdir()) == []


def test_download_network_error(tmp_path, monkeypatch):
    _serve(monkeypatch, error=urllib.error.URLError("no network here"))
    expected = "(?s)binarized_mnist_train.amat.*FLOWLIB_DATA.*no network here"
    with pytest.raises(FileNotFoundError, match=expected):
        data.load("binarized-mnist", "train", root=tmp_path)
    assert list((tmp_path / "binarized_mnist").iterdir()) == []


def test_download_into_read_only_root(tmp_path, monkeypatch):
    _serve(monkeypatch, error=AssertionError("must not try to download"))
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(FileNotFoundError, match="not writable"):
            data.load("binarized-mnist", "valid", root=tmp_path)
        assert list(tmp_path.iterdir()) == []
    finally:
        tmp_path.chmod(0o755)


# ------------------------------------------------------------------ MNIST, Fashion-MNIST


def _official_train(raw: pathlib.Path):
    """The 60k official training images and labels, decoded here independently of torchvision."""

    def read(name, offset):
        path = raw / name
        blob = path.read_bytes() if path.is_file() else gzip.decompress((raw / f"{name}.gz").read_bytes())
        return torch.from_numpy(np.frombuffer(blob, dtype=np.uint8, offset=offset).copy())

    return read("train-images-idx3-ubyte", 16).reshape(60_000, 784), read("train-labels-idx1-ubyte", 8)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_splits(shared, name, folder):
    pytest.importorskip("torchvision")
    root, _ = shared
    if not (root / folder / "raw").is_dir():
        pytest.skip(f"no {folder}/raw in {root}: " + SKIP_REASON)
    before = _snapshot(root)
    splits = {split: data.load(name, split, root=root, download=False) for split in data.SPLITS}
    for split, n in [("train", 50_000), ("valid", 10_000), ("test", 10_000)]:
        x, y = splits[split]
        assert x.shape == (n, 784) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        assert y.shape == (n,) and y.dtype == torch.int64 and set(y.tolist()) == set(range(10))
    images, labels = _official_train(root / folder / "raw")
    assert torch.equal(splits["train"][0], images[:50_000].float() / 255)
    assert torch.equal(splits["valid"][0], images[50_000:].float() / 255)
    assert torch.equal(splits["train"][1], labels[:50_000].long())
    assert torch.equal(splits["valid"][1], labels[50_000:].long())
    assert _snapshot(root) == before


def _gz_only_fashion_root(shared, root: pathlib.Path) -> pathlib.Path:
    """A data root holding Fashion-MNIST as the four ``.gz`` files only; returns its raw folder."""
    pytest.importorskip("torchvision")
    source = shared[0] / "FashionMNIST" / "raw"
    if not source.is_dir():
        pytest.skip(f"no FashionMNIST/raw in {shared[0]}: " + SKIP_REASON)
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in data.RAW_FILES:
        gz = source / f"{f}.gz"
        blob = gz.read_bytes() if gz.is_file() else gzip.compress((source / f).read_bytes())
        (raw / f"{f}.gz").write_bytes(blob)
    return raw


def test_read_only_gz_only_root_uses_a_mirror(shared, tmp_path, monkeypatch):
    """Like FashionMNIST in the shared folder: only .gz files, read-only; extraction goes to the cache."""
    raw = _gz_only_fashion_root(shared, tmp_path / "root")
    raw.chmod(0o555)
    monkeypatch.setenv("FLOWLIB_CACHE", str(tmp_path / "cache"))
    try:
        before = _snapshot(tmp_path / "root")
        x, y = data.load("fashion-mnist", "test", root=tmp_path / "root", download=False)
        assert x.shape == (10_000, 784) and y.shape == (10_000,)
        assert _snapshot(tmp_path / "root") == before
        mirror = next((tmp_path / "cache" / "torchvision").glob("*/FashionMNIST/raw"))
        assert (mirror / "t10k-images-idx3-ubyte").is_file()
    finally:
        raw.chmod(0o755)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_missing_without_download(tmp_path, name, folder):
    pytest.importorskip("torchvision")
    with pytest.raises(FileNotFoundError) as info:
        data.load(name, "train", root=tmp_path, download=False)
    message = str(info.value)
    for part in ["train-images-idx3-ubyte", str(tmp_path / folder / "raw"), "FLOWLIB_DATA", "download=True"]:
        assert part in message
    assert list(tmp_path.iterdir()) == []


def test_torchvision_network_error(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    import torchvision.datasets.mnist

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", offline)
    with pytest.raises(FileNotFoundError, match="(?s)train-images-idx3-ubyte.*FLOWLIB_DATA.*no network here"):
        data.load("mnist", "test", root=tmp_path, download=True)


def test_shared_folder_unchanged(shared):
    """Runs last: nothing above wrote into the shared data folder."""
    root, before = shared
    assert _snapshot(root) == before


def test_writable_gz_only_root_is_not_written_to(shared, tmp_path, monkeypatch):
    """A writable data root holding only the .gz files (as after a manual download) stays as it
    was: torchvision extracts into the cache's mirror, not into the user's data folder."""
    _gz_only_fashion_root(shared, tmp_path / "root")
    monkeypatch.setenv("FLOWLIB_CACHE", str(tmp_path / "cache"))
    before = _snapshot(tmp_path / "root")
    x, _ = data.load("fashion-mnist", "valid", root=tmp_path / "root", download=False)
    assert x.shape == (10_000, 784)
    assert _snapshot(tmp_path / "root") == before
