"""Evaluate a checkpoint without retraining, with any overrides of the run's own config:

    python eval.py ckpt_path=outputs/.../checkpoints/last.ckpt task.eval_lengths=[256,4096]
    python eval.py ckpt_path=outputs/.../checkpoints/last.ckpt pe/scaling=yarn pe.scaling.factor=8

The training run's config (``<run>/run_config.yaml``, or ``<run>/.hydra/config.yaml`` for older runs) is the
base; the command-line overrides (Hydra override grammar: ``key=value``, ``+new.key=value``, ``group=option``)
change it. Results go to ``<run>/eval/<time>_<uid>/`` (results.json, metrics.csv, plots); the run itself is never
touched. A mistake in the command prints ``error: ...`` and exits with status 2.

A pretrained causal LM directory (Hugging Face layout: config.json, weights, tokenizer) is evaluated directly, no
run directory needed (keys: rope_lab/longctx/config.py):

    python eval.py pretrained=/models/llama eval_suite=[ppl_by_position,sliding_window,passkey,ruler] \
        eval_lengths=[2048,4096,8192]

Results go to ``outputs/eval_pretrained/<dir name>/<time>_<uid>/`` (or ``out_dir=``, which must not hold a
finished result).

Any other command without ``ckpt_path`` evaluates weights a backbone loads from outside rope_lab (timm / naver
RoPE-ViT ``backbone.timm_weights``, Qwen2-VL ``backbone.pretrained``) on a task, the config composed from configs/
as train.py does (``experiment=`` works); results in ``out_dir=`` (default ``outputs/eval/<task>/<pe>/<time>_<uid>/``):

    python eval.py backbone=vit_base backbone.timm_weights=vit_base_patch16_rope_mixed_224.naver_in1k pe=rope_mixed \
        task=image_cls task.dataset=imagefolder task.data_path=/data/imagenet task.train_resolution=224 \
        'task.eval_resolutions=[144,224,384,512]'
"""

import os
import sys

import rope_lab  # noqa: F401, I001 -- first: importing rope_lab sets OMP_WAIT_POLICY before torch loads OpenMP

from rope_lab.cli import USAGE_ERROR, report_user_errors
from rope_lab.evaluate import evaluate, evaluate_from_configs, parse_overrides

os.environ.setdefault("WANDB_MODE", "offline")

USAGE = ("usage: python eval.py ckpt_path=<run>/checkpoints/last.ckpt [key=value | +new.key=value | group=option ...]\n"
         "       python eval.py pretrained=<hf checkpoint dir> [eval_suite=[...] eval_lengths=[...] key=value ...]\n"
         "       python eval.py <train.py overrides naming a backbone's outside weights> [out_dir=<dir>]")


def main(argv: list[str]) -> dict:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE + "\n\n" + __doc__)
        raise SystemExit(0)

    def work() -> dict:
        values = parse_overrides(argv)
        if "pretrained" in values:
            if "ckpt_path" in values:
                raise ValueError("give either ckpt_path=<run checkpoint> or pretrained=<hf checkpoint dir>, not both")
            from rope_lab.longctx.suite import evaluate_pretrained

            return evaluate_pretrained(values)
        if not argv:
            print(USAGE, file=sys.stderr)
            raise SystemExit(USAGE_ERROR)
        if "ckpt_path" not in values:  # a backbone loads outside weights (backbone.timm_weights, backbone.pretrained)
            out_dir = values.get("out_dir")
            return evaluate_from_configs([a for a in argv if not a.startswith("out_dir=")], out_dir)
        ckpt = values.pop("ckpt_path")
        return evaluate(str(ckpt), values)

    return report_user_errors(work)


if __name__ == "__main__":
    main(sys.argv[1:])
