"""Real video frames for the V-NIAH haystacks (shared/reference/data.md section 5).

Sources: a folder of frames the user gave (``task.frames_path``: every .png/.jpg/.pgm/.bmp file, sorted by name,
as one sequence per sub-folder or one for the folder itself; a missing or empty folder is an error); else Debian's
``visp-images-data`` 3.5.0 (real grayscale camera sequences from Inria's ViSP tracking tests, GPL-2; PGM frames
read by Pillow with no codec). Frames are converted to grayscale, resized to ``size`` x ``size`` and cached
as one ``.npz`` per (source, size).

ViSP sequences are split by sequence, so no training haystack frame appears in an evaluation haystack:
training ``mire-2`` (501 frames) and ``mbt/cube`` (218); evaluation ``cube`` (80), ``ellipse-1`` (50) and
``line`` (33).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from rope_lab.data.fetch import DEFAULT_DATA_DIR, Source, debian_package, resolve, user_path_source

log = logging.getLogger(__name__)

VISP_ROOT = "usr/share/visp-images-data/ViSP-images"
VISP_TRAIN = ("mire-2", "mbt/cube")
VISP_EVAL = ("cube", "ellipse-1", "line")
VISP_PINNED = {
    f"{VISP_ROOT}/mire-2/image.0001.pgm": "57bffd7f58b3e8261d77b6afef2730c96145cdd622e215f120f2b4d44c766e40",
    f"{VISP_ROOT}/cube/image.0000.pgm": "9f56883798b65511ffd8fc363675e222280985df4adeb1ef114426b089d8ada2",
    f"{VISP_ROOT}/line/image.0001.pgm": "4b347aae2a5bd37c6f4c18c802dea7c87dbac4cd557268f3fcecf68fc31f0cc7",
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pgm", ".ppm", ".bmp")


def read_frames(folder: Path, size: int) -> np.ndarray:
    """Every image file directly in ``folder`` (sorted by name) -> (F, size, size) uint8 grayscale."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no frames ({'/'.join(IMAGE_SUFFIXES)}) in {str(folder)!r}")
    frames = [np.asarray(Image.open(f).convert("L").resize((size, size), Image.BILINEAR)) for f in files]
    return np.stack(frames)


def _cached(cache: Path, name: str, build) -> Path:
    """The cache file ``video_frames/<name>.npz``, built by ``build() -> {"train", "eval"}`` when missing."""
    path = cache / "video_frames" / f"{name}.npz"
    if not path.is_file():
        seqs = build()
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **seqs)
    return path


def visp_sequences(cache: Path, size: int) -> Path:
    """Cache file of {"train": frames, "eval": frames} from visp-images-data."""

    def build():
        root = debian_package("visp-images-data", cache, VISP_PINNED) / VISP_ROOT
        return {"train": np.concatenate([read_frames(root / s, size) for s in VISP_TRAIN]),
                "eval": np.concatenate([read_frames(root / s, size) for s in VISP_EVAL])}

    return _cached(cache, f"visp_{size}", build)


def folder_sequences(path: str, size: int) -> dict[str, np.ndarray]:
    """A user folder: sub-folders are sequences (the last one, by name, is held out for evaluation); a flat
    folder of frames is split 80/20 by time."""
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"task.frames_path={path!r} is not a directory")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    if len(subdirs) >= 2:
        seqs = [read_frames(d, size) for d in subdirs]
        return {"train": np.concatenate(seqs[:-1]), "eval": seqs[-1]}
    frames = read_frames(root, size)
    if len(frames) < 2:
        raise ValueError(f"task.frames_path={path!r} holds {len(frames)} frame; need at least 2")
    cut = max(1, int(0.8 * len(frames)))
    return {"train": frames[:cut], "eval": frames[cut:]}


def _folder_key(path: str) -> str:
    """Cache key of a user folder: its path and every frame's name, size and mtime (edits invalidate it)."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if root.is_dir() else []
    facts = [str(root.resolve())] + [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return hashlib.sha1("\n".join(facts).encode()).hexdigest()[:12]


def load_haystack_frames(size: int, data_dir: str | Path | None = None, frames_path: str | None = None
                         ) -> tuple[dict[str, np.ndarray], str]:
    """({"train": (F, s, s) uint8, "eval": (F', s, s) uint8}, source name)."""
    if size < 4:
        raise ValueError(f"frame size must be >= 4 pixels, got {size}")
    if frames_path:  # the user's frames or an error naming the folder; never a silent fallback to ViSP
        cache_name = f"user_{_folder_key(frames_path)}_{size}"

        def user(cache: Path) -> Path:
            return _cached(cache, cache_name, lambda: folder_sequences(frames_path, size))

        sources = [user_path_source("task.frames_path", frames_path, user)]
    else:
        sources = [Source("debian:visp-images-data", lambda cache: visp_sequences(cache, size))]
    hint = ("instead: task.frames_path=<folder of video frames (.png/.jpg/.pgm/.bmp), or of one sub-folder per "
            "sequence>")
    path, name = resolve("video_frames", sources, data_dir or DEFAULT_DATA_DIR, hint=hint)
    with np.load(path) as data:
        seqs = {k: data[k] for k in ("train", "eval")}
    log.info("haystack frames from %s: %d train / %d eval", name, len(seqs["train"]), len(seqs["eval"]))
    return seqs, name
