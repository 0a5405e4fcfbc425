"""Training-step throughput and peak memory: our LLaMA decoder vs transformers' LlamaForCausalLM (issue 6).

    python scripts/bench_train.py [--steps 10] [--rounds 7] [--batch 4] [--length 512] [--profile]

Both models are built from the same dimensions (HF ``LlamaConfig`` <- our ``DecoderConfig``), see the same
token batches, and run the same step: forward, next-token cross-entropy, backward, AdamW. Each model runs in
its own subprocess so that peak memory (max RSS during the timed steps minus RSS before them) is not shared.
``--rounds`` times both models that many times, alternating which goes first, and the throughput ratio is the
median over rounds of ours/HF within a round (a drifting shared machine moved a single pair by +-5 %).
Prints tokens/s and peak memory of each and the ratios ours/HF, measured in the same run; writes
benchmarks/train_bench.json and .md. ``--profile`` prints the top torch.profiler ops of one step of each.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import rope_lab  # noqa: F401, I001 -- first: importing rope_lab sets OMP_WAIT_POLICY before torch loads OpenMP
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
DIMS = dict(vocab_size=4096, dim=256, depth=4, n_heads=8, n_kv_heads=4, mlp_hidden=704, norm_eps=1e-6)


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build(which: str):
    if which == "ours":
        from rope_lab.backbones.decoder import Decoder, DecoderConfig
        from rope_lab.pe import build_pe

        model = Decoder(DecoderConfig(**DIMS, max_tokens=4096), build_pe({"name": "rope", "base": 10000.0}))

        def loss_fn(tokens):
            from rope_lab.pe import Positions

            pos = Positions.sequence(tokens.shape[0], tokens.shape[1])
            logits = model(tokens, pos)
            targets = F.pad(tokens[:, 1:], (0, 1), value=-100)  # the same shifted loss as HF's ForCausalLMLoss
            return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(vocab_size=DIMS["vocab_size"], hidden_size=DIMS["dim"], num_hidden_layers=DIMS["depth"],
                          num_attention_heads=DIMS["n_heads"], num_key_value_heads=DIMS["n_kv_heads"],
                          intermediate_size=DIMS["mlp_hidden"], rms_norm_eps=DIMS["norm_eps"], rope_theta=10000.0,
                          max_position_embeddings=4096, tie_word_embeddings=False, attention_bias=False)
        cfg._attn_implementation = "sdpa"
        model = LlamaForCausalLM(cfg)

        def loss_fn(tokens):
            return model(input_ids=tokens, labels=tokens).loss
    return model, loss_fn


def child(which: str, steps: int, batch: int, length: int, profile: bool) -> dict:
    torch.manual_seed(0)
    model, loss_fn = build(which)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, DIMS["vocab_size"], (batch, length), generator=g) for _ in range(steps + 2)]

    def step(tokens):
        loss = loss_fn(tokens)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for tokens in batches[:2]:  # warm-up (and compilation of the rotary kernel)
        step(tokens)
    before = rss_bytes()
    times = []
    for tokens in batches[2:]:
        t0 = time.perf_counter()
        step(tokens)
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    out = {"model": which, "params": sum(p.numel() for p in model.parameters()),
           "tokens_per_s": batch * length / min(times), "step_s_min": min(times),
           "step_s_median": sorted(times)[len(times) // 2], "peak_step_mem_mb": max(peak, 0) / 2**20}
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    with prof(activities=[ProfilerActivity.CPU], profile_memory=True) as p:
        step(batches[-1])
    out["peak_tensor_mem_mb"] = peak_live_bytes(p) / 2**20
    if profile:
        out["profile"] = p.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    return out


def peak_live_bytes(p) -> int:
    """Peak of (bytes allocated - bytes freed) by tensors during the profiled step (allocator-independent)."""
    mem = sorted((e.start_ns(), e.nbytes()) for e in p.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, delta in mem:
        live += delta
        peak = max(peak, live)
    return peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--rounds", type=int, default=7, help="runs of both models; the ratio is the median over them")
    ap.add_argument("--child", choices=["ours", "hf"], help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.batch, args.length, args.profile)))
        return
    rounds = []
    for r in range(args.rounds):  # alternate who goes first: the shared machine drifts between runs
        runs = {}
        for which in ("hf", "ours") if r % 2 == 0 else ("ours", "hf"):
            cmd = [sys.executable, __file__, "--child", which, "--steps", str(args.steps), "--batch",
                   str(args.batch), "--length", str(args.length)] + (["--profile"] if args.profile and r == 0 else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[which] = json.loads(proc.stdout.strip().splitlines()[-1])
            if "profile" in runs[which]:
                print(f"== {which}\n{runs[which].pop('profile')}")
        rounds.append(runs)
        print(f"round {r + 1}: ours / HF throughput "
              f"{runs['ours']['tokens_per_s'] / runs['hf']['tokens_per_s']:.3f}", flush=True)
    results = {which: max((rnd[which] for rnd in rounds), key=lambda x: x["tokens_per_s"]) for which in ("hf", "ours")}
    ours, hf = results["ours"], results["hf"]
    per_round = [rnd["ours"]["tokens_per_s"] / rnd["hf"]["tokens_per_s"] for rnd in rounds]
    ratio = {"throughput_ours_over_hf": statistics.median(per_round), "throughput_ratio_per_round": per_round,
             "peak_tensor_mem_ours_over_hf": ours["peak_tensor_mem_mb"] / hf["peak_tensor_mem_mb"],
             "peak_rss_ours_over_hf": ours["peak_step_mem_mb"] / max(hf["peak_step_mem_mb"], 1e-9)}
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "threads": torch.get_num_threads(), "dims": DIMS,
               "batch": args.batch, "length": args.length, "steps": args.steps, "results": results, **ratio,
               "note": f"{args.rounds} rounds, each runs both models (alternating which goes first); a model's tokens/s "
                       "from its min step time; throughput ratio = median over rounds of ours/HF in the same round"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_bench.json").write_text(json.dumps(summary, indent=1))
    md = (f"Training step, LLaMA {DIMS} batch {args.batch} x {args.length} tokens, CPU {summary['threads']} threads "
          f"({summary['date']}, shared machine)\n\n| model | params | tokens/s | peak tensor memory of a step (MB) | "
          f"peak RSS growth (MB) |\n|---|---|---|---|---|\n"
          + "".join(f"| {r['model']} | {r['params']} | {r['tokens_per_s']:.0f} | {r['peak_tensor_mem_mb']:.0f} | "
                    f"{r['peak_step_mem_mb']:.0f} |\n" for r in (hf, ours))
          + f"\nours / HF: throughput {ratio['throughput_ours_over_hf']:.2f}x (median of {args.rounds} rounds: "
            f"{', '.join(f'{x:.2f}' for x in per_round)}), peak tensor memory "
            f"{ratio['peak_tensor_mem_ours_over_hf']:.2f}x (RSS growth {ratio['peak_rss_ours_over_hf']:.2f}x)\n")
    (args.out / "train_bench.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
