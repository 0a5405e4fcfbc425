"""Read character data out of an installed R package's lazy-load database (``data/Rdata.rdx`` + ``.rdb``), without R.

R stores a package's data sets as objects in R's own serialization format (XDR, big-endian; "R Internals", section
"Serialization Formats"): the ``.rdx`` index (gzip) maps each object's name to an (offset, length) in the ``.rdb``
file, where each object is a 4-byte length followed by a zlib stream. Only the types these data sets use are read:
NULL, pairlists with tags (attributes), symbols, references, CHARSXP strings and the vectors (logical, integer,
double, character, list). Anything else raises, naming the type, instead of guessing.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Any

# SEXP type codes ("R Internals" 1.1.1) and the serializer's pseudo-types
NILSXP, SYMSXP, LISTSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP = 0, 1, 2, 9, 10, 13, 14, 16, 19
REFSXP, NILVALUE_SXP = 255, 254
HAS_ATTR, HAS_TAG = 1 << 9, 1 << 10


class _Reader:
    def __init__(self, raw: bytes) -> None:
        if raw[:2] != b"X\n":
            raise ValueError(f"not an XDR R serialization (header {raw[:2]!r}; only the binary XDR format is read)")
        self.raw, self.pos, self.refs = raw, 2, []
        version = self.int()
        self.pos += 8  # writer and minimal reader versions
        if version == 3:
            length = self.int()  # then the native encoding's name
            self.pos += length

    def int(self) -> int:
        (value,) = struct.unpack_from(">i", self.raw, self.pos)
        self.pos += 4
        return value

    def numbers(self, fmt: str, n: int, size: int) -> list:
        values = list(struct.unpack_from(f">{n}{fmt}", self.raw, self.pos))
        self.pos += n * size
        return values

    def item(self) -> Any:
        flags = self.int()
        kind = flags & 0xFF
        if kind in (NILVALUE_SXP, NILSXP):
            return None
        if kind == REFSXP:
            return self.refs[(flags >> 8) - 1]
        if kind == SYMSXP:
            name = self.item()
            self.refs.append(name)
            return name
        if kind == CHARSXP:
            n = self.int()
            if n == -1:  # NA_character_
                return None
            text = self.raw[self.pos : self.pos + n].decode("utf-8", errors="replace")
            self.pos += n
            return text
        if kind == LISTSXP:
            self.item() if flags & HAS_ATTR else None
            tag = self.item() if flags & HAS_TAG else None
            head, rest = self.item(), self.item()
            return {tag: head, **(rest or {})}
        if kind in (LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP):
            n = self.int()
            if kind in (LGLSXP, INTSXP):
                values = self.numbers("i", n, 4)
            elif kind == REALSXP:
                values = self.numbers("d", n, 8)
            else:
                values = [self.item() for _ in range(n)]
            attributes = self.item() if flags & HAS_ATTR else None
            if attributes and "names" in attributes:
                return dict(zip(attributes["names"], values))
            return values
        raise ValueError(f"R object type {kind} at byte {self.pos - 4} is not supported by this reader")


def unserialize(raw: bytes) -> Any:
    """One R object (XDR serialization) -> Python: vectors as lists, named vectors as dicts, NULL/NA as None."""
    return _Reader(raw).item()


def load_lazydata(prefix: Path | str) -> dict[str, Any]:
    """``<pkg>/data/Rdata`` -> {object name: object} for every object of the package's lazy-load database."""
    prefix = Path(prefix)
    index = unserialize(gzip.decompress(prefix.with_suffix(".rdx").read_bytes()))
    database = prefix.with_suffix(".rdb").read_bytes()
    objects = {}
    for name, (offset, length) in index["variables"].items():
        blob = database[int(offset) : int(offset) + int(length)]
        objects[name] = unserialize(zlib.decompress(blob[4:]))  # 4-byte big-endian length, then zlib
    return objects
