"""Fetch the default datasets into the cache (``make data``): Fashion-MNIST and the Python docs corpus.

Each dataset is tried on its own; one that no source provides (e.g. no ``apt-get`` on a non-Debian machine and no
internet) prints its reasons and the alternative to choose, the others are still fetched, and the exit status is 1.
"""

from __future__ import annotations

import logging
import os
import sys

from rope_lab.data.fashion_mnist import fashion_mnist_root
from rope_lab.data.fetch import DataUnavailable
from rope_lab.tasks.lm.corpus import load_corpus


def _fashion_mnist(data_dir: str | None) -> str:
    root, source = fashion_mnist_root(data_dir)
    return f"{root} ({source})"


def _python_docs(data_dir: str | None) -> str:
    docs, source = load_corpus("python_docs", data_dir)
    return f"{len(docs)} documents ({source})"


DEFAULTS = {"fashion_mnist": _fashion_mnist, "python_docs": _python_docs}


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data_dir = os.environ.get("ROPE_LAB_DATA")
    failed = 0
    for name, fetch in DEFAULTS.items():
        try:
            print(f"{name}: {fetch(data_dir)}")
        except DataUnavailable as err:
            failed += 1
            print(f"error: {err}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
