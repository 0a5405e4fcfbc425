"""Fetch the default datasets into the cache (``make data``): Fashion-MNIST and the Python docs corpus."""

from __future__ import annotations

import logging
import os

from rope_lab.data.fashion_mnist import fashion_mnist_root
from rope_lab.tasks.lm.corpus import load_corpus


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data_dir = os.environ.get("ROPE_LAB_DATA")
    root, source = fashion_mnist_root(data_dir)
    print(f"fashion_mnist: {root} ({source})")
    docs, source = load_corpus("python_docs", data_dir)
    print(f"python_docs: {len(docs)} documents ({source})")


if __name__ == "__main__":
    main()
