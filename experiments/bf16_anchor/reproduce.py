"""bf16 drift of RoPE attention (Wang et al., TMLR 2025, §2) with and without AnchorAttention's fixed anchor id.

    python scripts/reproduce.py bf16_anchor [--length 512] [--sink 8]
Writes drift.csv and bf16_drift.png next to this file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> None:
    from rope_lab.analysis.bf16_drift import plot, run

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--sink", type=float, default=8.0)
    args = parser.parse_args(argv)
    start = time.time()
    series = run(length=args.length, sink=args.sink)
    offsets = sorted(next(iter(series.values())))
    lines = [",".join(["offset", *series])]
    lines += [",".join([str(o), *[f"{series[k][o]:.6g}" for k in series]]) for o in offsets]
    (HERE / "drift.csv").write_text("\n".join(lines) + "\n")
    plot(series, HERE / "bf16_drift.png")
    print("\n".join(lines))
    print(f"wall time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
