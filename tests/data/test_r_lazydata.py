"""The R lazy-load reader on Debian's r-cran-janeaustenr (Project Gutenberg texts), checked against facts outside
our code: Debian's pinned file checksums, the package's own test (six books; Persuasion has fewer lines than Emma)
and the novels' known first lines; and a hand-assembled XDR stream following "R Internals" (NA strings, names)."""

from __future__ import annotations

import struct

import pytest

from rope_lab.data.r_lazydata import unserialize
from rope_lab.longctx import corpus
from rope_lab.longctx.corpus import load_long_documents


def _xdr(*ints: int) -> bytes:
    return struct.pack(f">{len(ints)}i", *ints)


def test_hand_assembled_named_character_vector():
    """c(a = "x", b = NA) as R's serialize(..., version = 2) lays it out."""
    charsxp = lambda s: _xdr(0x00040009, len(s)) + s.encode()  # CHARSXP, ASCII flag  # noqa: E731
    raw = (b"X\n" + _xdr(2, 0x030500, 0x020300)
           + _xdr(0x210, 2) + charsxp("x") + _xdr(9, -1)  # STRSXP with attributes; NA_character_
           + _xdr(0x402) + _xdr(1) + charsxp("names")  # attribute pairlist: tag symbol "names"
           + _xdr(0x10, 2) + charsxp("a") + charsxp("b") + _xdr(254))  # its value, then the end of the list
    assert unserialize(raw) == {"a": "x", "b": None}
    with pytest.raises(ValueError, match="not an XDR R serialization"):
        unserialize(b"A\n123")


def test_austen_novels_from_the_debian_package(tmp_path):
    docs, source = load_long_documents("austen", str(tmp_path))
    if source != "debian:r-cran-janeaustenr":
        pytest.skip(f"apt unavailable here (used {source})")
    books = {d.name: d.text for d in docs}
    assert sorted(books) == ["emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice",
                             "sensesensibility"]
    assert books["persuasion"].count("\n") < books["emma"].count("\n")
    assert "Emma Woodhouse, handsome, clever, and rich" in books["emma"]
    assert "It is a truth universally acknowledged" in books["prideprejudice"]
    assert all(len(t) > 400_000 for t in books.values())


def test_without_apt_the_python_topics_are_used(tmp_path, monkeypatch):
    def no_apt(*_args):
        raise RuntimeError("'apt-get' not found")

    monkeypatch.setattr(corpus, "debian_package", no_apt)
    docs, source = load_long_documents("austen", str(tmp_path))
    assert source == "python:pydoc_data.topics" and len(docs[0].text) > 100_000
    with pytest.raises(ValueError, match="unknown corpus 'pg19'; choose one of"):
        load_long_documents("pg19", str(tmp_path))
