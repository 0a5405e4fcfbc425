"""Real ADS-B aircraft tracks shipped inside the PyPI wheel ``traffic==2.13`` (Olive, "traffic", JOSS 2019;
OpenSky Network recordings, redistributed by the package under MIT; cite both, non-commercial research use).

Only the data files are taken from the wheel (``pip download --no-deps`` + unzip, sha256-pinned); nothing of the
package is installed or imported. See shared/reference/data.md section 4.1.

``load_tracks`` returns every aircraft resampled onto one time grid of ``interval_s`` seconds, in a local metric
frame (equirectangular projection about the collection's mean latitude/longitude; error < 0.1 % over ~200 km):
x east and y north in metres, heading in radians counter-clockwise from east (``pi/2 - track``), wrapped to
(-pi, pi]. Grid points farther than ``max_gap_s`` from a raw sample on either side are NaN (missing), never
interpolated across a gap. A missing ``track`` (13 % of ``quickstart``) is filled from the direction of the
resampled velocity when the aircraft moves faster than ``min_speed`` m/s; otherwise the point stays NaN.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rope_lab.data.fetch import Source, pip_wheel_files, resolve, user_path_source, verified

log = logging.getLogger(__name__)

WHEEL = "traffic==2.13"
SAMPLES = "traffic/data/samples/collections"
#: sha256 of the files inside traffic-2.13-py3-none-any.whl (sha256sum after unzip, 2026-11-26)
COLLECTIONS = {
    "quickstart": "0ef1a97f6b96c31a58e2d9cf58af01a90016eb97472f37718dcba3913c682403",  # Paris, 3 h, 1 s
    "switzerland": "ff5be108224b2a96892a697faf2a7492bf530e64d145d9675eb927c4ed97d4c3",  # 17 h, 10 s
}
EARTH_RADIUS = 6371e3


@dataclass
class Tracks:
    """One collection on a common grid: ``xyh`` (M agents, T steps, 3) float64 with NaN for missing points."""

    name: str
    times: np.ndarray  # (T,) seconds since the first grid step
    agents: list[str]  # icao24 per row
    xyh: np.ndarray


def collection_path(name: str, data_dir: str | Path | None = None, user_path: str | None = None
                    ) -> tuple[Path, str]:
    """Path of a verified ``<name>.json.gz`` and the source used (cache, user path or the PyPI wheel)."""
    if name not in COLLECTIONS:
        raise ValueError(f"unknown aircraft collection '{name}'; choose one of {list(COLLECTIONS)}")
    member, digest = f"{SAMPLES}/{name}.json.gz", COLLECTIONS[name]

    def user(cache: Path) -> Path:
        path = Path(user_path) / f"{name}.json.gz"
        if not path.is_file():
            raise FileNotFoundError(f"task.data_path={user_path!r} has no {name}.json.gz")
        if not verified(path, digest):
            raise ValueError(f"{path} fails its sha256 checksum (task.data_path must hold the files of {WHEEL})")
        return path.parent

    def wheel(cache: Path) -> Path:
        return pip_wheel_files(WHEEL, cache, {member: digest}) / SAMPLES

    # the user's folder or an error naming it; never a silent fallback to the wheel
    sources = [user_path_source("task.data_path", user_path, user)] if user_path else [Source(f"pypi:{WHEEL}", wheel)]
    hint = (f"instead: task.data_path=<folder holding {name}.json.gz, copied from {SAMPLES}/ inside the {WHEEL} "
            f"wheel (pip download --no-deps {WHEEL} on a machine that reaches PyPI)>")
    root, source = resolve(f"aircraft/{name}", sources, data_dir, hint=hint)
    return root / f"{name}.json.gz", source


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Wrap radians to (-pi, pi]."""
    return np.pi - np.mod(np.pi - angle, 2 * np.pi)


def _interp_masked(t_grid: np.ndarray, t: np.ndarray, values: np.ndarray, max_gap: float) -> np.ndarray:
    """Linear interpolation of the finite samples; NaN where the bracketing samples are > max_gap apart."""
    ok = np.isfinite(values)
    t, values = t[ok], values[ok]
    out = np.full(t_grid.shape, np.nan)
    if len(t) < 2:
        return out
    right = np.clip(np.searchsorted(t, t_grid), 1, len(t) - 1)
    left = right - 1
    inside = (t_grid >= t[0]) & (t_grid <= t[-1]) & (t[right] - t[left] <= max_gap)
    out[inside] = np.interp(t_grid[inside], t, values)
    return out


def resample_agent(t: np.ndarray, x: np.ndarray, y: np.ndarray, heading: np.ndarray, grid: np.ndarray,
                   max_gap: float, min_speed: float) -> np.ndarray:
    """Raw samples of one aircraft -> (T, 3) (x, y, heading) on ``grid``; see the module doc for the rules."""
    gx, gy = _interp_masked(grid, t, x, max_gap), _interp_masked(grid, t, y, max_gap)
    cos_h = _interp_masked(grid, t, np.cos(heading), max_gap)
    sin_h = _interp_masked(grid, t, np.sin(heading), max_gap)
    gh = np.arctan2(sin_h, cos_h)
    gh[~(np.isfinite(cos_h) & np.isfinite(sin_h))] = np.nan
    if len(grid) > 1:  # heading from velocity where the track angle is missing
        vx, vy = np.gradient(gx, grid), np.gradient(gy, grid)
        moving = np.hypot(vx, vy) > min_speed
        fill = ~np.isfinite(gh) & np.isfinite(gx) & moving
        gh[fill] = np.arctan2(vy[fill], vx[fill])
    out = np.stack((gx, gy, _wrap(gh)), axis=-1)
    out[~np.isfinite(out).all(axis=-1)] = np.nan  # a point is valid only with all three coordinates
    return out


def load_tracks(name: str, interval_s: float = 10.0, max_gap_s: float = 60.0, min_speed: float = 5.0,
                data_dir: str | Path | None = None, user_path: str | None = None) -> tuple[Tracks, str]:
    """Read one collection and resample every aircraft (``icao24``) onto a common grid."""
    import pandas as pd

    if interval_s <= 0 or max_gap_s <= 0:
        raise ValueError(f"interval_s and max_gap_s must be > 0; got {interval_s}, {max_gap_s}")
    path, source = collection_path(name, data_dir, user_path)
    cached = path.parent / f"{name}_resampled_{interval_s:g}s_gap{max_gap_s:g}_v{min_speed:g}.npz"
    if cached.is_file() and cached.stat().st_mtime >= path.stat().st_mtime:  # derived from the verified file
        z = np.load(cached)
        return Tracks(name, z["times"], list(z["agents"]), z["xyh"]), f"{source} (resampled cache)"
    df = pd.read_json(path)
    t = (pd.to_datetime(df["timestamp"]) - pd.Timestamp(0)).dt.total_seconds().to_numpy()
    lat0, lon0 = df["latitude"].mean(), df["longitude"].mean()
    x = np.radians(df["longitude"].to_numpy() - lon0) * EARTH_RADIUS * np.cos(np.radians(lat0))
    y = np.radians(df["latitude"].to_numpy() - lat0) * EARTH_RADIUS
    heading = np.radians(90.0 - df["track"].to_numpy(dtype=float))
    t0 = np.floor(t.min() / interval_s) * interval_s
    grid = np.arange(t0, t.max() + interval_s, interval_s)
    ids = df["icao24"].to_numpy()
    agents, rows = [], []
    for agent in np.unique(ids):
        sel = np.flatnonzero(ids == agent)
        sel = sel[np.argsort(t[sel], kind="stable")]
        ts, first = np.unique(t[sel], return_index=True)  # one sample per timestamp
        keep = sel[first]
        rows.append(resample_agent(ts, x[keep], y[keep], heading[keep], grid, max_gap_s, min_speed))
        agents.append(str(agent))
    xyh = np.stack(rows) if rows else np.zeros((0, len(grid), 3))
    log.info("aircraft %s (%s): %d agents, %d steps of %gs, %.1f%% of grid points valid", name, source,
             len(agents), len(grid), interval_s, 100 * np.isfinite(xyh[..., 0]).mean())
    tracks = Tracks(name, grid - t0, agents, xyh)
    np.savez_compressed(cached, times=tracks.times, agents=np.array(agents), xyh=xyh)
    return tracks, source
