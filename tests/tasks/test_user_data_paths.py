"""A data path the user gave (task.data_path, task.frames_path, task.fashion_mnist_path) that does not work is an
error naming the path: it used to log a warning and quietly fall back to the default data, so a run trained on
data the user never chose."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rope_lab.data import fetch
from rope_lab.data.aircraft import collection_path
from rope_lab.data.fashion_mnist import fashion_mnist_root
from rope_lab.data.video_frames import load_haystack_frames
from rope_lab.tasks.lm.corpus import load_corpus
from rope_lab.tasks.lm.datamodule import LMDataConfig, LMDataModule


@pytest.fixture
def no_fallback(monkeypatch):
    """Any download / package fallback is a test failure (and would take the default data)."""

    def fallback(*args, **kwargs):
        raise AssertionError("fell back to the default data source")

    import rope_lab.data.aircraft as aircraft
    import rope_lab.data.fashion_mnist as fm
    import rope_lab.data.video_frames as vf
    import rope_lab.tasks.lm.corpus as corpus

    for mod in (corpus, vf, fm):
        monkeypatch.setattr(mod, "debian_package", fallback)
    monkeypatch.setattr(aircraft, "pip_wheel_files", fallback)


def test_lm_data_path_that_does_not_exist_is_an_error(tmp_path, no_fallback):
    missing = str(tmp_path / "nonexistent")
    cfg = LMDataConfig(corpus="python_docs", data_dir=str(tmp_path), data_path=missing)
    with pytest.raises(FileNotFoundError, match=r"^task.data_path='.*nonexistent' does not exist$"):
        LMDataModule(cfg, seed=0, total_steps=2).setup()


def test_lm_data_path_without_the_docs_is_an_error(tmp_path, no_fallback):
    (tmp_path / "notes.txt").write_text("not the python docs")
    with pytest.raises(ValueError, match=r"task.data_path=.* holds no \*.rst.txt files"):
        load_corpus("python_docs", str(tmp_path / "cache"), data_path=str(tmp_path))
    docs = tmp_path / "docs" / "library"
    docs.mkdir(parents=True)
    (docs / "a.rst.txt").write_text("real reST " * 10)
    got, source = load_corpus("python_docs", str(tmp_path / "cache"), data_path=str(tmp_path / "docs"))
    assert [d.name for d in got] == ["library/a.rst.txt"] and str(tmp_path / "docs") in source


@pytest.mark.parametrize("corpus", ["stdlib", "hf"])
def test_lm_data_path_a_corpus_does_not_read_is_an_error(tmp_path, corpus):
    with pytest.raises(ValueError, match=rf"task.data_path=.* is not read by task.corpus={corpus}"):
        load_corpus(corpus, str(tmp_path), data_path=str(tmp_path))


def test_frames_path_missing_or_empty_is_an_error(tmp_path, no_fallback):
    with pytest.raises(FileNotFoundError, match=r"^task.frames_path='.*nope' does not exist$"):
        load_haystack_frames(8, tmp_path / "cache", str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"no frames .* in '.*empty'"):
        load_haystack_frames(8, tmp_path / "cache", str(empty))
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match=r"task.frames_path=.*file.png' is not a directory"):
        load_haystack_frames(8, tmp_path / "cache", str(tmp_path / "file.png"))


def test_frames_path_that_works_is_used(tmp_path, no_fallback):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.full((12, 12), 40 * i, dtype=np.uint8)).save(folder / f"{i:03d}.png")
    seqs, source = load_haystack_frames(8, tmp_path / "cache", str(folder))
    assert seqs["train"].shape == (4, 8, 8) and seqs["eval"].shape == (1, 8, 8) and str(folder) in source


def test_fashion_mnist_path_that_does_not_work_is_an_error(tmp_path, no_fallback, monkeypatch):
    import rope_lab.data.fashion_mnist as fm

    # even with a good cached copy the user's path is what is read (the cache came first before)
    monkeypatch.setattr(fm, "_all_verified", lambda root: Path(root) == tmp_path / "cache" / "fashion_mnist")
    with pytest.raises(FileNotFoundError, match=r"task.fashion_mnist_path='.*nope' does not exist"):
        fashion_mnist_root(tmp_path / "cache", str(tmp_path / "nope"), "task.fashion_mnist_path")
    with pytest.raises(ValueError, match=r"task.data_path='.*' does not work: .*lacks the four Fashion-MNIST"):
        fashion_mnist_root(tmp_path / "cache", str(tmp_path))


def test_trajectory_data_path_that_does_not_work_is_an_error(tmp_path, no_fallback):
    with pytest.raises(FileNotFoundError, match=r"task.data_path='.*nope' does not exist"):
        collection_path("quickstart", tmp_path / "cache", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=r"task.data_path='.*' has no quickstart.json.gz"):
        collection_path("quickstart", tmp_path / "cache", str(tmp_path))
    (tmp_path / "quickstart.json.gz").write_bytes(b"corrupt")
    with pytest.raises(ValueError, match=r"quickstart.json.gz fails its sha256 checksum"):
        collection_path("quickstart", tmp_path / "cache", str(tmp_path))


def test_resolve_stops_at_a_failing_user_source(tmp_path):
    def broken(_):
        raise RuntimeError("unreadable")

    def default(_):
        raise AssertionError("fell back")

    with pytest.raises(ValueError, match=r"^dataset demo: user path /x does not work: unreadable$"):
        fetch.resolve("demo", [fetch.Source("user path /x", broken, user_given=True), fetch.Source("d", default)],
                      tmp_path)
