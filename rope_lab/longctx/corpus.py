"""Long documents for perplexity evaluation, resolved through ``rope_lab.data.fetch`` (the source used is logged).

- ``austen`` (default): Jane Austen's six novels, the Project Gutenberg texts packaged by Debian
  (``r-cran-janeaustenr``, 4.0 M characters; every novel is 425k-868k characters, far longer than any context),
  read from the R package's data without R (:mod:`rope_lab.data.r_lazydata`). The closest thing to PG-19 that an
  offline machine can get. Where apt is unavailable the fallback is the Python reference topics that ship with
  every Python (``pydoc_data.topics``, 0.46 M characters, one document), and the log says so.
- ``python_docs``: the reST sources of the Python documentation (as ``task=lm_longctx`` uses).
- ``files``: every text file under ``corpus_path``.
"""

from __future__ import annotations

from pathlib import Path

from rope_lab.data.fetch import Source, debian_package, resolve
from rope_lab.data.r_lazydata import load_lazydata
from rope_lab.tasks.lm.corpus import Document, load_corpus

CORPORA = ("austen", "python_docs", "files")
AUSTEN_DATA = "usr/lib/R/site-library/janeaustenr/data/Rdata"
AUSTEN_PINNED = {  # sha256 of the files in Debian bookworm's r-cran-janeaustenr 1.0.0-1
    f"{AUSTEN_DATA}.rdb": "8fb5198960d0da724b1562f96e4221e5c1b41ff455000280b02c55980c3d8f21",
    f"{AUSTEN_DATA}.rdx": "cab8cbe4ce965d3b42b35c03383bafccc0eb78151f70e4748ead45270470c22f",
}


def austen_novels(root: Path) -> list[Document]:
    """The six novels from an extracted ``r-cran-janeaustenr``: one document each (lines joined by newlines)."""
    books = load_lazydata(root / AUSTEN_DATA)
    return [Document(name, "\n".join(line or "" for line in lines)) for name, lines in sorted(books.items())]


def python_reference_topics() -> list[Document]:
    """Python's own reference topics (shipped with the interpreter): the offline fallback, one long document."""
    from pydoc_data.topics import topics

    return [Document("pydoc_data.topics", "\n\n".join(topics[k] for k in sorted(topics)))]


def _austen(data_dir: str) -> tuple[list[Document], str]:
    def debian(cache: Path) -> Path:
        return debian_package("r-cran-janeaustenr", cache, AUSTEN_PINNED)

    def shipped(cache: Path) -> Path:
        return Path("<pydoc_data>")

    root, source = resolve("austen", [Source("debian:r-cran-janeaustenr", debian),
                                      Source("python:pydoc_data.topics", shipped)], data_dir)
    docs = python_reference_topics() if source.startswith("python:") else austen_novels(root)
    return docs, source


def load_long_documents(corpus: str, data_dir: str, corpus_path: str | None = None) -> tuple[list[Document], str]:
    """(documents, source) for ``corpus``; a ``corpus_path`` is read only by ``files`` and ``python_docs``."""
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; choose one of {list(CORPORA)}")
    if corpus == "austen":
        if corpus_path:
            raise ValueError(f"corpus_path={corpus_path!r} is not read by corpus=austen; use corpus=files for a "
                             f"folder of text files")
        return _austen(data_dir)
    return load_corpus(corpus, data_dir, data_path=corpus_path)
