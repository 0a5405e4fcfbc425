"""Real text corpora for the long-context LM task, each resolved through ``rope_lab.data.fetch``.

- ``python_docs``: reST sources of the Python 3.11 documentation (Debian ``python3.11-doc``; 497 documents,
  11 M characters, PSF-2.0). English technical prose; many documents are longer than any training context.
- ``stdlib``: the Python standard library's own source files (ships with every Python; no download).
- ``files``: every text file under a directory the user gives (``task.data_path``).
- ``hf``: any Hugging Face ``datasets`` corpus (``task.hf_dataset``, ``task.hf_config``, ``task.hf_text_field``;
  local files through a packaged builder: ``task.hf_dataset=text task.hf_data_files=/path/*.txt``).
Documents are split into train/validation by a hash of their name, so no document is in both.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from rope_lab.data.fetch import Source, check_user_path, debian_package, resolve, user_path_source

CORPORA = ("python_docs", "stdlib", "files", "hf")
PYDOC_ROOT = "usr/share/doc/python3.11/html/_sources"
# A few documents pinned by checksum (the package is pinned by Debian's release; these catch a corrupt cache).
PYDOC_PINNED = {
    f"{PYDOC_ROOT}/library/stdtypes.rst.txt": "dd8a546884dbda32152d94e21579dfc02818513f62192b6b963b86f4b2551a47",
    f"{PYDOC_ROOT}/tutorial/index.rst.txt": "cbe35a0878b649eca9d05bbc27c6fa69aec607a4e8698343883f4ca27d187d69",
}
#: what a machine without Debian's python3.11-doc can use instead
PYDOC_HINT = ("instead: task.corpus=stdlib (the Python standard library's own sources, no download), or "
              "task.corpus=files task.data_path=<folder of text files>, or task.data_path=<folder of the Python "
              "docs' *.rst.txt sources>")
STDLIB_SKIP = {"test", "idlelib", "lib2to3", "tkinter", "turtledemo", "site-packages", "ensurepip", "pydoc_data"}


@dataclass
class Document:
    name: str
    text: str


def is_validation(name: str, val_fraction: float) -> bool:
    """Deterministic document-level split (stable across machines and Python versions)."""
    digest = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < val_fraction


def _read_tree(root: Path, pattern: str) -> list[Document]:
    docs = []
    for path in sorted(p for p in root.rglob(pattern) if p.is_file()):  # "*" also matches sub-folders
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            docs.append(Document(str(path.relative_to(root)), text))
    return docs


def _python_docs(data_dir: str, data_path: str | None) -> tuple[list[Document], str]:
    def user(_cache: Path) -> Path:
        if not any(Path(data_path).rglob("*.rst.txt")):
            raise ValueError(f"task.data_path={data_path!r} holds no *.rst.txt files (corpus python_docs reads the "
                             f"Python docs' reST sources; use task.corpus=files for any text folder)")
        return Path(data_path)

    def debian(cache: Path) -> Path:
        return debian_package("python3.11-doc", cache, PYDOC_PINNED) / PYDOC_ROOT

    if data_path:  # the user's folder or an error naming it; never a silent fallback to the default corpus
        root, source = resolve("python_docs", [user_path_source("task.data_path", data_path, user)], data_dir)
    else:
        root, source = resolve("python_docs", [Source("debian:python3.11-doc", debian)], data_dir, hint=PYDOC_HINT)
    return _read_tree(root, "*.rst.txt"), source


def _stdlib() -> tuple[list[Document], str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = [d for d in _read_tree(root, "*.py") if d.name.split("/")[0] not in STDLIB_SKIP]
    return docs, f"stdlib:{root}"


def _files(data_path: str | None) -> tuple[list[Document], str]:
    if not data_path:
        raise ValueError(f"task.corpus=files needs task.data_path to be a directory; got {data_path!r}")
    check_user_path("task.data_path", data_path, "dir")
    docs = _read_tree(Path(data_path), "*")
    if not docs:
        raise ValueError(f"no text files under task.data_path={data_path!r}")
    return docs, f"files:{data_path}"


def _hf(name: str | None, config: str | None, split: str, field: str, data_files: str | None = None
        ) -> tuple[list[Document], str]:
    if not name:
        raise ValueError("task.corpus=hf needs task.hf_dataset (e.g. 'emozilla/pg19', or 'text' with hf_data_files)")
    import datasets

    ds = datasets.load_dataset(name, config, split=split, data_files=data_files)
    if field not in ds.column_names:
        raise ValueError(f"hf dataset {name} has no text field '{field}'; columns: {ds.column_names}")
    return [Document(f"{name}/{i}", row[field]) for i, row in enumerate(ds)], f"hf:{name}"


def load_corpus(corpus: str, data_dir: str, data_path: str | None = None, hf_dataset: str | None = None,
                hf_config: str | None = None, hf_split: str = "train", hf_text_field: str = "text",
                hf_data_files: str | None = None) -> tuple[list[Document], str]:
    """Return (documents, source description)."""
    if corpus == "python_docs":
        return _python_docs(data_dir, data_path)
    if data_path and corpus in ("stdlib", "hf"):  # a path the user gave is never silently ignored
        raise ValueError(f"task.data_path={data_path!r} is not read by task.corpus={corpus}; use task.corpus=files "
                         f"for a folder of text files{' or task.hf_data_files' if corpus == 'hf' else ''}, "
                         f"or drop task.data_path")
    if corpus == "stdlib":
        return _stdlib()
    if corpus == "files":
        return _files(data_path)
    if corpus == "hf":
        return _hf(hf_dataset, hf_config, hf_split, hf_text_field, hf_data_files)
    raise ValueError(f"unknown corpus '{corpus}'; choose one of {list(CORPORA)}")
