"""Every default dataset on a machine without Debian's apt-get (hidden from PATH) and without internet: the error
lists what was tried and ends with one line naming the alternative, and that alternative works."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rope_lab.data.fetch import DataUnavailable


@pytest.fixture
def no_apt(monkeypatch, tmp_path):
    """apt-get and dpkg-deb are not on PATH; torchvision's and pip's downloads fail as they would offline."""
    import torchvision.datasets

    import rope_lab.data.aircraft

    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    def offline(*args, **kwargs):
        raise RuntimeError("no network (simulated)")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    monkeypatch.setattr(rope_lab.data.aircraft, "pip_wheel_files", offline)
    return tmp_path / "empty_cache"  # a data dir with nothing cached


def python_docs(cache):
    from rope_lab.tasks.lm.corpus import load_corpus

    return load_corpus("python_docs", str(cache))


def fashion_mnist(cache):
    from rope_lab.data.fashion_mnist import fashion_mnist_root

    return fashion_mnist_root(cache)


def fashion_mnist_needles(cache):  # V-NIAH's needles: the same files under the task's own option
    from rope_lab.data.fashion_mnist import load_fashion_mnist

    return load_fashion_mnist("test", cache, None, "task.fashion_mnist_path")


def video_frames(cache):
    from rope_lab.data.video_frames import load_haystack_frames

    return load_haystack_frames(8, cache)


def aircraft(cache):
    from rope_lab.data.aircraft import collection_path

    return collection_path("quickstart", cache)


@pytest.mark.parametrize("load,reason,alternative", [
    (python_docs, "'apt-get' not found", "instead: task.corpus=stdlib"),
    (fashion_mnist, "'apt-get' not found", "instead: task.data_path=<folder holding the four Fashion-MNIST files"),
    (fashion_mnist_needles, "'apt-get' not found", "instead: task.fashion_mnist_path=<folder"),
    (video_frames, "'apt-get' not found", "instead: task.frames_path=<folder of video frames"),
    (aircraft, "no network", "instead: task.data_path=<folder holding quickstart.json.gz"),
], ids=lambda v: getattr(v, "__name__", None))
def test_unavailable_default_data_names_the_alternative_in_one_line(no_apt, load, reason, alternative):
    with pytest.raises(DataUnavailable) as info:
        load(no_apt)
    lines = str(info.value).splitlines()
    assert any(reason in line for line in lines[1:-1]), lines  # why each source failed
    assert lines[-1].startswith(alternative), lines[-1]  # the last line: what to choose instead


def test_the_named_corpus_alternatives_exist_and_need_no_apt(no_apt, monkeypatch, tmp_path):
    """The corpora the hint names are valid choices; ``stdlib`` reads the interpreter's own sources (pointed here at
    a small stand-in folder, as reading the real standard library takes seconds) and ``files`` a user's folder."""
    import re

    from rope_lab.tasks.lm import corpus

    assert set(re.findall(r"task\.corpus=(\w+)", corpus.PYDOC_HINT)) == {"stdlib", "files"} <= set(corpus.CORPORA)
    lib = tmp_path / "lib"
    (lib / "json").mkdir(parents=True)
    (lib / "json" / "decoder.py").write_text("def decode(s):\n    return s\n")
    monkeypatch.setattr(corpus.sysconfig, "get_paths", lambda: {"stdlib": str(lib)})
    docs, source = corpus.load_corpus("stdlib", str(no_apt))
    assert source == f"stdlib:{lib}" and [d.name for d in docs] == ["json/decoder.py"]
    docs, source = corpus.load_corpus("files", str(no_apt), str(lib))
    assert source == f"files:{lib}" and len(docs) == 1


def test_the_named_frames_alternative_works_without_apt(no_apt, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(5):
        Image.fromarray(np.full((12, 12), 40 * i, np.uint8)).save(frames / f"{i:03d}.png")
    from rope_lab.data.video_frames import load_haystack_frames

    seqs, source = load_haystack_frames(8, no_apt, str(frames))
    assert source.startswith("user path") and seqs["train"].shape == (4, 8, 8) and seqs["eval"].shape == (1, 8, 8)


def test_the_named_fashion_mnist_alternative_works_without_apt(no_apt):
    """A folder holding the four files (here: this machine's cache, if a previous run filled it)."""
    from rope_lab.data.fashion_mnist import FILES, fashion_mnist_root

    have = Path(os.environ.get("ROPE_LAB_DATA", Path.home() / ".cache" / "rope_lab")) / "fashion_mnist"
    if not all((have / name).is_file() for name in FILES):
        pytest.skip("no Fashion-MNIST copy on this machine to stand in for the user's folder")
    root, source = fashion_mnist_root(no_apt, str(have))
    assert source == f"user path {have}"


def test_make_data_reports_each_missing_dataset_and_fails(no_apt, monkeypatch, capsys):
    from rope_lab.data import prefetch

    monkeypatch.setenv("ROPE_LAB_DATA", str(no_apt))
    assert prefetch.main() == 1
    err = capsys.readouterr().err
    assert err.count("error: could not get dataset") == 2 and "instead: task.corpus=stdlib" in err
