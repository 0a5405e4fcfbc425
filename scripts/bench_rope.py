"""Benchmark the rotary core's backends against the memory-traffic floor and other libraries (issue 6).

    python scripts/bench_rope.py [--repeats 3] [--scale 1.0] [--regime all|fresh|fresh-thp|reuse] [--out benchmarks]

For a 1-D LM, a 2-D ViT and a 3-D video shape, fp32 and bf16, forward and forward+backward, it times the rotation
of q and k (the per-layer cost; cos/sin tables, where a method uses them, are built once per forward outside the
timed region, as every library does; 1-D and 2-D positions are shared by the batch, as our tasks and HF's default
position_ids are, so every method gets one table row for all batch rows) and prints ratios measured in the same
run (on CPU every method of a row, floors included, is timed in each of ROUNDS interleaved rounds: the same number
of samples over the same stretch of time, since on a shared CPU the machine drifts; a ratio is the median over the
rounds of the method's time over the floor's time in the same round, ``paired_ratio``):

  floor      copy  = q, k copied into preallocated buffers; clone = q.clone(), k.clone() (fresh allocations)
             forward+backward floors: the same for q, k and their gradients (read once, write once, twice)
  ours       pe.kernel=eager | compiled | auto (auto = what a model gets; triton on CUDA only)
  libraries  transformers apply_rotary_pos_emb (LLaMA; for the 3-D row this is Qwen2-VL's multimodal path: in
             transformers 5.x it recomposes M-RoPE sections into the tables and calls the same function) and
             rotary-embedding-torch apply_rotary_emb (axial frequencies for 2-D/3-D)

Error columns: max |angle - exact| over the row's positions (exact = float64 product of the same fp32 frequency)
for our angles and for the naive fp32 product the libraries use, and each method's max |output - exact rotation|.
On CPU the page regime is pinned (``--regime``, default all three, each in its own process): ``fresh`` (every large
buffer is new pages that fault on first write), ``fresh-thp`` (the same with torch's huge-page allocations,
THP_MEM_ALLOC_ENABLE=1) and ``reuse`` (freed memory is reused, as with jemalloc/tcmalloc: clone ~ copy). Writes
<out>/rope_bench_cpu_<regime>.{json,md} (rope_bench_cuda.* on a GPU); each table ends with whether ``ours auto``
meets issue 6's targets on that row.
Timings on a shared CPU are noisy: the ratios, measured back to back, are what to read.
On CUDA a method's time is its GPU time (``graph_time``: CUDA-graph replays after an L2 flush) and the ``ours auto``
call is also timed as launched from Python (do_bench), where the GPU can wait on the host for small tensors.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import rope_lab  # noqa: F401, I001 -- first: importing rope_lab sets OMP_WAIT_POLICY before torch loads OpenMP
import torch
from rotary_embedding_torch import apply_rotary_emb as ret_apply
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as hf_apply

from rope_lab.pe import AttentionGeometry, Positions, build_pe
from rope_lab.pe.kernels import compiled, triton_rope

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Shape:
    name: str
    pe: dict
    batch: int
    heads: int
    length: int
    head_dim: int
    grid: tuple[int, ...]  # axes of the positions (1-D: (length,))


SHAPES = [
    Shape("1D LM (rope)", {"name": "rope"}, 8, 16, 2048, 64, (2048,)),
    Shape("2D ViT-B/16 224px (rope_axial)", {"name": "rope_axial"}, 64, 12, 196, 64, (14, 14)),
    Shape("3D video 8x16x16 (mrope)", {"name": "mrope"}, 2, 16, 2048, 128, (8, 16, 16)),
]


WARMUP_CALLS, WARMUP_S = 10, 0.3
GRAPH_REPLAYS = 50  # CUDA: timed replays of a captured graph per method
L2_FLUSH_BYTES = 256 << 20  # larger than any GPU's L2 (H100 50 MB, H200 60 MB): each replay starts cold
ROUNDS = 15  # CPU: interleaved rounds per row (see time_all); with 7 a bf16 row's ratio moved by up to 0.15 between runs
#: glibc malloc settings (read at process start) that pin the page regime of the CPU timings. With glibc's defaults
#: a process drifts between them (its mmap threshold adapts to freed sizes up to 32 MiB), which moved the clone
#: floor up to 6x within one row.
REGIMES = {
    # every buffer >= 64 KiB is a new mapping whose pages fault on first write (glibc's default above 32 MiB)
    "fresh": {"MALLOC_MMAP_THRESHOLD_": "65536"},
    # the same with torch's 2 MiB-aligned, huge-page-advised allocations
    "fresh-thp": {"MALLOC_MMAP_THRESHOLD_": "65536", "THP_MEM_ALLOC_ENABLE": "1"},
    # freed memory is reused, as a caching allocator (jemalloc, tcmalloc) does: no page faults, clone ~ copy
    "reuse": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)},
}
MALLOC_VARS = sorted({k for env in REGIMES.values() for k in env})


def in_regime(regime: str) -> bool:
    """This process started with exactly ``regime``'s malloc/THP environment."""
    return all(os.environ.get(k) == REGIMES[regime].get(k) for k in MALLOC_VARS)


def regime_env(regime: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_VARS}
    return env | REGIMES[regime]


def thp_setting() -> str:
    try:
        kernel = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        kernel = "unknown"
    return f"kernel THP: {kernel}; THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}"


def grid_coords(grid: tuple[int, ...], batch: int) -> torch.Tensor:
    """(B, N, A) integer coordinates of a row-major grid (t, row, col) / (row, col) / (index,), shared by the batch:
    a broadcast view, as the tasks build positions and as HF's default ``position_ids`` (1, N) are."""
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in grid], indexing="ij")
    return torch.stack([a.flatten() for a in axes], -1).expand(batch, -1, -1)


def build(shape: Shape, kernel: str, device: str):
    geom = AttentionGeometry(shape.heads * shape.head_dim, shape.head_dim, shape.heads, shape.heads, 1)
    pe = build_pe({**shape.pe, "kernel": kernel}).setup(geom).to(device)
    coords = grid_coords(shape.grid, shape.batch)
    if pe.min_axes > coords.shape[-1]:  # M-RoPE: (modality-free) text id axis + (t, h, w); use its own layout
        pos = pe.example_positions(shape.batch, shape.length)
    else:
        pos = Positions(coords)
    return pe, pos.to(device)


def warm_up(fn) -> None:
    """At least WARMUP_CALLS calls and WARMUP_S seconds: on the VM these numbers come from, even a copy into
    preallocated buffers takes ~10 calls to settle (9.9 -> 1.4 ms for ViT-B bf16 q and k)."""
    start, calls = time.perf_counter(), 0
    while calls < WARMUP_CALLS or time.perf_counter() - start < WARMUP_S:
        fn()
        calls += 1


def call_time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def timed(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after warm-up (CPU); on CUDA, triton's do_bench (CUDA events, L2
    flushed, mean): the time of the call as launched from Python, host overhead included where the GPU waits."""
    if torch.cuda.is_available():
        from triton.testing import do_bench

        return do_bench(fn, warmup=10, rep=max(25, 10 * repeats)) * 1e-3
    warm_up(fn)
    return min(call_time(fn) for _ in range(repeats))


def graph_time(fn, reps: int = GRAPH_REPLAYS) -> float | None:
    """CUDA: median GPU time of ``fn`` captured once in a CUDA graph and replayed after an L2 flush each time: what
    the GPU spends on the work, without Python's launch overhead (as in a model run under CUDA graphs or
    torch.compile's reduce-overhead mode). None when ``fn`` cannot be captured."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as graph capture of autograd requires
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except RuntimeError as err:
        print(f"  (no CUDA graph: {str(err).splitlines()[0]})")
        return None
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device="cuda")
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    graph.replay()
    for start, end in events:
        flush.zero_()
        start.record()
        graph.replay()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events) * 1e-3


def methods(shape: Shape, pe_by_kernel: dict, pos: Positions, device: str):
    """name -> (prepare() -> context, apply(context, q, k) -> (q', k')); tables built in prepare."""
    out = {}
    for kernel, pe in pe_by_kernel.items():
        out[f"ours {kernel}"] = (lambda pe=pe: pe.prepare(pos), lambda st, q, k, pe=pe: pe.rotate(q, k, st, 0))
    ref = pe_by_kernel["eager"]
    plan = ref.frequency_plan(ref.inv_freq, 0)  # (H|1, A, P)
    coords = ref.position_map(pos)
    coords = (coords[:1] if coords.shape[0] > 1 and coords.stride(0) == 0 else coords).to(device)  # shared rows

    def naive_angles():
        return torch.einsum("bna,hap->bhnp", coords.float(), plan.float())[:, 0]  # (B|1, N, P), libraries' fp32

    def hf_tables(dtype):
        ang = naive_angles()
        emb = torch.cat((ang, ang), -1)  # HF layout: (B, N, D), cast to the activation dtype as HF does
        return emb.cos().to(dtype), emb.sin().to(dtype)

    # Qwen2-VL's multimodal path (transformers 5.x) = section-recomposed tables + this same apply function
    out["transformers"] = (None, lambda tabs, q, k: hf_apply(q, k, *tabs))
    out["rotary-embedding-torch"] = (lambda: naive_angles().repeat_interleave(2, -1)[:, None],
                                     lambda freqs, q, k: (ret_apply(freqs, q), ret_apply(freqs, k)))
    return out, hf_tables, naive_angles


def exact_rotation(pe, pos, q, k):
    st = pe.prepare(pos)
    return pe.rotate(q.double(), k.double(), st, 0)


def bench_shape(shape: Shape, dtype: torch.dtype, repeats: int, device: str, kernels: list[str]) -> list[dict]:
    pes = {}
    for kernel in kernels:
        pes[kernel], pos = build(shape, kernel, device)
    g = torch.Generator().manual_seed(0)
    size = (shape.batch, shape.heads, shape.length, shape.head_dim)
    q, k, gq, gk = (torch.randn(size, generator=g).to(device, dtype) for _ in range(4))
    meth, hf_tables, naive_angles = methods(shape, pes, pos, device)
    ref = pes["eager"]
    # errors ------------------------------------------------------------------------------------------------
    plan = ref.frequency_plan(ref.inv_freq, 0)
    coords = ref.position_map(pos)
    exact_ang = torch.einsum("bna,hap->bhnp", coords.double(), plan.double())
    ours_ang = torch.atan2(*reversed(ref.cos_sin(ref.prepare(pos), 0))).double()
    wrap = lambda a: (torch.remainder(a - exact_ang + math.pi, 2 * math.pi) - math.pi).abs().max().item()  # noqa
    angle_err = {"ours": wrap(ours_ang), "naive fp32": wrap(naive_angles().double()[:, None])}
    eq, ek = exact_rotation(ref, pos, q, k)
    rows = []
    for mode in ("forward", "forward+backward"):
        floor_copy_bufs = [torch.empty_like(t) for t in (q, k, gq, gk)]
        srcs = (q, k) if mode == "forward" else (q, k, gq, gk)
        fns = {"copy": lambda: [b.copy_(s) for b, s in zip(floor_copy_bufs, srcs)],
               "clone": lambda: [s.clone() for s in srcs]}
        row = {"shape": shape.name, "dtype": str(dtype).replace("torch.", ""), "mode": mode,
               "angle_err_ours": angle_err["ours"], "angle_err_naive_fp32": angle_err["naive fp32"], "methods": {}}
        errors = {}
        for name, (prep, apply) in meth.items():
            ctx = prep() if prep is not None else hf_tables(dtype)
            # HF rotates half pairs, rotary-embedding-torch interleaved ones: errors only where the layout matches
            layout = "interleaved" if "rotary-embedding" in name else "half"
            if mode == "forward":
                fns[name] = no_grad(lambda ctx=ctx, apply=apply: apply(ctx, q, k))
                if name.startswith("ours") or layout == ref.cfg.pair_layout:
                    with torch.no_grad():
                        oq, ok_ = apply(ctx, q, k)
                    errors[name] = max((oq.double() - eq).abs().max().item(), (ok_.double() - ek).abs().max().item())
            else:
                fns[name] = backward_step(ctx, apply, q, k, gq, gk)
        rounds = time_all(fns, repeats)
        if device == "cuda":  # the same calls launched from Python one by one: host overhead shows where it binds
            launched = {name: timed(fn, repeats) for name, fn in fns.items()}
            row["launched_ms"] = {name: t * 1e3 for name, t in launched.items()}
            for floor in ("copy", "clone"):  # the floor is the faster of two timings of the same copy: on an H100
                rounds[floor] = [min(rounds[floor][0], launched[floor])]  # graph replays of a copy ran up to 20% slower
        copy, clone = rounds.pop("copy"), rounds.pop("clone")
        row |= {"copy_ms": min(copy) * 1e3, "clone_ms": min(clone) * 1e3,
                "clone_ms_spread": [min(clone) * 1e3, max(clone) * 1e3]}
        for name, times in rounds.items():
            row["methods"][name] = {"ms": min(times) * 1e3, "x_copy": paired_ratio(times, copy),
                                    "x_clone": paired_ratio(times, clone)}
            if name in errors:
                row["methods"][name]["max_err_vs_exact"] = errors[name]
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


def no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()
    return run


def backward_step(ctx, apply, q, k, gq, gk):
    qg, kg = q.detach().requires_grad_(), k.detach().requires_grad_()

    def step():
        a, b = apply(ctx, qg, kg)
        torch.autograd.backward((a, b), (gq, gk))
        qg.grad = kg.grad = None

    return step


def round_orders(names: list[str], rounds: int) -> list[list[str]]:
    """The order of ``names`` in each round: round r walks them with a step s_r coprime to their number, starting
    at r, so a method's predecessor changes from round to round. What ran just before (eager's large temporaries, a
    clone's fresh pages) changes the allocator and cache state the next method meets; a plain rotation keeps every
    method's predecessor (``auto`` always followed ``eager`` and measured 1.01-1.07x ``compiled``, the same code)."""
    n = len(names)
    steps = [s for s in range(1, n) if math.gcd(s, n) == 1] or [1]
    return [[names[(r + j * steps[r % len(steps)]) % n] for j in range(n)] for r in range(rounds)]


def paired_ratio(times: list[float], floor: list[float]) -> float:
    """The median over rounds of a method's time over the floor's time in the same round. A slow stretch of the
    VM slows both sides of a pair; the ratio of the two minima could pair one method's lucky round with another's
    unlucky one (on this VM the same code measured 1.14x and 1.33x in one row that way)."""
    return statistics.median(t / f for t, f in zip(times, floor, strict=True))


def time_all(fns: dict, repeats: int) -> dict[str, list[float]]:
    """name -> seconds per round (the best of ``repeats`` calls). CPU: after warm-up, ``ROUNDS`` rounds each time
    every method (floors included) for ``repeats`` calls in turn, in a different order each round (``round_orders``),
    so every method gets the same number of samples spread over the same stretch of time and each round pairs
    every method with the floors measured next to it (``paired_ratio``). CUDA: each method's GPU time from CUDA-graph
    replays (``graph_time``; do_bench where it cannot be captured)."""
    if torch.cuda.is_available():
        return {name: [graph_time(fn) or timed(fn, repeats)] for name, fn in fns.items()}
    for fn in fns.values():
        warm_up(fn)
    rounds = {n: [] for n in fns}
    for order in round_orders(list(fns), ROUNDS):
        for name in order:
            rounds[name].append(min(call_time(fns[name]) for _ in range(repeats)))
    return rounds


def format_row(row: dict) -> str:
    parts = [f"{row['shape']:<32} {row['dtype']:<8} {row['mode']:<16} clone {row['clone_ms']:7.1f} ms"]
    for name, m in row["methods"].items():
        parts.append(f"{name}: {m['x_clone']:.2f}x")
    return " | ".join(parts)


def target_verdict(row: dict, device: str) -> str:
    """Issue 6's targets for ``ours auto``: CPU forward <= 1.2x the clone floor, forward+backward <= 1.5x; GPU >= 70%
    of the bandwidth floor (<= 1/0.7 x copy); and faster than every library on the row."""
    ratio = "x_copy" if device == "cuda" else "x_clone"
    limit = 1 / 0.7 if device == "cuda" else (1.2 if row["mode"] == "forward" else 1.5)
    auto = row["methods"]["ours auto"]
    libraries = [m["ms"] for n, m in row["methods"].items() if not n.startswith("ours")]
    floor_ok, libs_ok = auto[ratio] <= limit, all(auto["ms"] < ms for ms in libraries)
    why = [] if floor_ok else [f"{auto[ratio]:.2f} > {limit:.2f}"]
    why += [] if libs_ok else ["a library is faster"]
    return "yes" if floor_ok and libs_ok else "no (" + "; ".join(why) + ")"


def markdown(result: dict) -> str:
    names = list(result["rows"][0]["methods"])
    ratio = "x_copy" if result["device"] == "cuda" else "x_clone"  # GPU: the copy is the bandwidth floor
    head = ["shape", "dtype", "pass", "copy ms", "clone ms (best round, worst round)", *[f"{n} ({ratio.replace('_', ' ')})" for n in names],
            "angle err ours / naive fp32 (rad)", "max err vs exact: ours / library (same layout)",
            "auto meets target (issue 6)"]
    launched = result["device"] == "cuda" and "launched_ms" in result["rows"][0]
    if launched:
        head.insert(-3, "ours auto launched from Python, do_bench (x copy launched the same way)")
    lines = [f"Measured {result['date']} on {result['machine']} ({result['threads']} threads, {result['device']}); "
             f"{result['thp']}. {result['note']}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        spread = r.get("clone_ms_spread", [r["clone_ms"]] * 2)
        cells = [r["shape"], r["dtype"], r["mode"], f"{r['copy_ms']:.1f}", f"{spread[0]:.1f} (max {spread[1]:.1f})"]
        cells += [f"{r['methods'][n][ratio]:.2f} ({r['methods'][n]['ms']:.3g} ms)" for n in names]
        if launched:
            ms = r["launched_ms"]
            cells.append(f"{ms['ours auto'] / ms['copy']:.2f} ({ms['ours auto']:.3g} ms)")
        cells.append(f"{r['angle_err_ours']:.1e} / {r['angle_err_naive_fp32']:.1e}")
        ours = [m["max_err_vs_exact"] for n, m in r["methods"].items() if "max_err_vs_exact" in m and "ours" in n]
        lib = [m["max_err_vs_exact"] for n, m in r["methods"].items() if "max_err_vs_exact" in m and "ours" not in n]
        fmt = lambda v: f"{max(v):.1e}" if v else "-"  # noqa: E731
        cells.append(f"{fmt(ours)} / {fmt(lib)}")
        cells.append(target_verdict(r, result["device"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def without_regime(argv: list[str]) -> list[str]:
    """The command line minus its ``--regime=X`` / ``--regime X`` (each regime's process gets its own)."""
    kept, rest = [], iter(argv)
    for a in rest:
        if a == "--regime":
            next(rest, None)
        elif not a.startswith("--regime="):
            kept.append(a)
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="calls per method per round (CPU)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply batch sizes (e.g. 0.25 for a quick run)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--kernels", nargs="+", choices=["eager", "auto", "compiled", "triton"], default=None,
                    help="our backends to time (default: every one available; 'eager' is always included)")
    ap.add_argument("--regime", choices=["all", *REGIMES], default="all",
                    help="CPU page regime (malloc/THP environment, see REGIMES); 'all' runs each in its own process")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and args.regime == "all":
        argv = without_regime(sys.argv[1:])
        for regime in REGIMES:
            subprocess.run([sys.executable, __file__, *argv, f"--regime={regime}"], env=regime_env(regime), check=True)
        return
    if device == "cpu" and not in_regime(args.regime):  # glibc reads its settings at start: restart with them
        os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], regime_env(args.regime))
    if args.threads:
        torch.set_num_threads(args.threads)
    kernels = ["eager", "auto"] + (["compiled"] if compiled.compile_available(device) else [])
    if triton_rope.available():
        kernels.append("triton")
    if args.kernels:
        kernels = ["eager", *[k for k in kernels if k in args.kernels and k != "eager"]]
    print(f"== {device}" + ("" if device == "cuda" else f", page regime '{args.regime}': {REGIMES[args.regime]}"))
    rows = []
    for shape in SHAPES:
        shape = Shape(shape.name, shape.pe, max(1, round(shape.batch * args.scale)), shape.heads, shape.length,
                      shape.head_dim, shape.grid)
        for dtype in (torch.float32, torch.bfloat16):
            rows += bench_shape(shape, dtype, args.repeats, device, kernels)
    regime = "" if device == "cuda" else f"page regime '{args.regime}' ({REGIMES[args.regime]}); "
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "device": device, "thp": thp_setting(), "torch": torch.__version__,
              "regime": None if device == "cuda" else args.regime,
              "note": f"batch scale {args.scale}; " + regime + (
                  f"{torch.cuda.get_device_name()}; GPU time = median of {GRAPH_REPLAYS} CUDA-graph replays, L2 "
                  "flushed before each (no Python launch overhead); x copy = 1 / fraction of the memory-bandwidth "
                  "floor, the faster of the copy's two timings; the launched column times the same Python call "
                  "with triton's do_bench (mean, L2 flushed)"
                  if device == "cuda" else
                  f"{ROUNDS} interleaved rounds of {args.repeats} calls (a round keeps its best) after >= "
                  f"{WARMUP_CALLS} warm-up calls; x clone = median over rounds of time / clone time in the same "
                  "round; ms = best round."),
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    name = "rope_bench_cuda" if device == "cuda" else f"rope_bench_cpu_{args.regime.replace('-', '_')}"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{name}.md").write_text(markdown(result))
    print(f"wrote {args.out}/{name}.json and .md")


if __name__ == "__main__":
    main()
