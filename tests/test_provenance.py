"""flowlib.training.records: the commit a run records is fixed when the process first asks."""

from __future__ import annotations

import subprocess

import pytest

from flowlib.training import records as provenance


def _git(*args):
    return subprocess.run(["git", *args], cwd=provenance.ROOT, capture_output=True, text=True)


@pytest.mark.skipif(_git("rev-parse", "HEAD").returncode != 0, reason="not a git checkout")
def test_commit_is_head_and_names_uncommitted_sources():
    head = _git("rev-parse", "HEAD").stdout.strip()
    provenance._commit.cache_clear()
    commit = provenance.git_commit()
    assert commit.startswith(head)
    dirty = bool(_git("status", "--porcelain", "--", "flowlib").stdout.strip())
    assert commit.endswith("with uncommitted changes in flowlib") == dirty
    # A path that cannot have changes gives the bare commit.
    assert provenance.git_commit(("no-such-path-in-this-repository",)) == head


def test_commit_is_cached_for_the_process(monkeypatch):
    provenance._commit.cache_clear()
    first = provenance.git_commit()

    def fail(*args, **kwargs):
        raise AssertionError("git must not be asked twice")

    monkeypatch.setattr(provenance.subprocess, "run", fail)
    assert provenance.git_commit() == first


def test_commit_outside_a_checkout_is_none(monkeypatch, tmp_path):
    provenance._commit.cache_clear()
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    assert provenance.git_commit(("flowlib",)) is None


def test_sources_must_be_a_tuple_of_paths():
    with pytest.raises(TypeError, match="tuple of paths"):
        provenance.git_commit(["flowlib"])


def test_root_is_the_checkout():
    """ROOT is the folder that holds flowlib (a wrong ROOT would ask git about the wrong paths)."""
    assert (provenance.ROOT / "pyproject.toml").is_file() and (provenance.ROOT / "flowlib").is_dir()


def test_write_results_records_where_a_result_came_from(tmp_path, monkeypatch):
    import json

    import torch

    from flowlib.training.checkpoint import load_checkpoint

    record = provenance.write_results(tmp_path / "out", {"fits": [1, 2]}, command="python -m flowlib x",
                                      states={"a": torch.ones(2)})
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written == record
    assert written["command"] == "python -m flowlib x" and written["fits"] == [1, 2]
    assert written["git_commit"] == provenance.git_commit()
    assert {"platform", "cpus", "torch_threads", "torch", "python"} <= set(written["machine"])
    assert torch.equal(load_checkpoint(tmp_path / "out" / "states.pt")["a"], torch.ones(2))
    # Atomic: a write that fails half-way leaves the previous file whole and no temporary behind.
    monkeypatch.setattr("flowlib.training.checkpoint.json.dumps", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        provenance.write_results(tmp_path / "out", {"fits": []}, command="again")
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == record
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.json", "states.pt"]
