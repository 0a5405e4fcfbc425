"""Data resolution: sources tried in order with reasons, checksums enforced, corrupt caches re-fetched."""

from __future__ import annotations

import pytest

from rope_lab.data.fashion_mnist import FILES, fashion_mnist_root, load_fashion_mnist
from rope_lab.data.fetch import DataUnavailable, Source, resolve


def test_resolve_reports_every_failed_source(tmp_path):
    def broken(_):
        raise RuntimeError("no network")

    def also_broken(_):
        raise OSError("disk full")

    with pytest.raises(DataUnavailable, match=r"(?s)'demo'.*first: no network.*second: disk full"):
        resolve("demo", [Source("first", broken), Source("second", also_broken)], tmp_path)


def test_fashion_mnist_offline_fallback_and_corrupt_cache_is_refetched(tmp_path):
    root, source = fashion_mnist_root(tmp_path)
    assert source in ("torchvision download", "debian:dataset-fashion-mnist")
    x, y, _ = load_fashion_mnist("test", tmp_path)
    assert x.shape == (10000, 28, 28) and sorted(set(y.tolist())) == list(range(10))
    victim = root / next(iter(FILES))
    victim.write_bytes(b"corrupt")
    root2, source2 = fashion_mnist_root(tmp_path)
    assert source2 != "cache"  # the corrupt cached copy was not used
    x2, _, _ = load_fashion_mnist("train", tmp_path)
    assert x2.shape == (60000, 28, 28)


def test_bad_split_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown Fashion-MNIST split 'val'"):
        load_fashion_mnist("val", tmp_path)
