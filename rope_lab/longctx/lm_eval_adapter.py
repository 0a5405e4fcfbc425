"""An EleutherAI lm-evaluation-harness model (``lm_eval.api.model.LM``) around :class:`CausalLM`, so any harness
task (or a local one: a YAML with ``dataset_path: json``) runs on the same models as the rest of this package.

Optional: needs ``pip install lm_eval`` (0.4.x; checked with 0.4.13). The three request types follow the harness's
own semantics (reference/evaluation.md section 5 and 2.3):

- ``loglikelihood(context, continuation)``: the continuation's tokens are those of ``context + continuation``
  after the context's (the separating space belongs to the continuation); an empty context is conditioned on the
  prefix token (BOS, else EOS); (sum of log-probabilities, whether every token is the greedy choice).
- ``loglikelihood_rolling(string)``: the whole string's log-probability given the prefix token, in disjoint
  windows of ``max_length`` predicted tokens, each conditioned on the one token before it (the harness's rolling
  windows with context 1), not a sliding window.
- ``generate_until(context, gen_kwargs)``: greedy decoding for ``max_gen_toks`` tokens, cut at the first ``until``
  string. Sampling is not offered (a requested ``do_sample`` raises).

Use in Python: ``lm_eval.simple_evaluate(model=RopeLabHarnessLM(lm), tasks=[...], task_manager=...)``; from the
harness CLI: ``--model rope_lab --model_args pretrained=<dir>`` after ``import rope_lab.longctx.lm_eval_adapter``.
"""

from __future__ import annotations

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from rope_lab.longctx.causal_lm import CausalLM, load_pretrained_causal_lm
from rope_lab.longctx.perplexity import sliding_window_nll


@register_model("rope_lab")
class RopeLabHarnessLM(LM):
    def __init__(self, lm: CausalLM, max_length: int = 2048, max_gen_toks: int = 256) -> None:
        super().__init__()
        self.lm, self.max_length, self.max_gen_toks = lm, max_length, max_gen_toks

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> RopeLabHarnessLM:
        args = dict(kv.split("=", 1) for kv in arg_string.split(",") if kv)
        if "pretrained" not in args:
            raise ValueError(f"model_args need pretrained=<checkpoint dir>; got {arg_string!r}")
        lm = load_pretrained_causal_lm(args.pop("pretrained"), args.pop("device", "auto"), args.pop("dtype", "auto"))
        return cls(lm, **{k: int(v) for k, v in args.items()})

    @property
    def prefix_token_id(self) -> int:
        tok = self.lm.tokenizer
        for name in ("bos_token_id", "eos_token_id"):
            if getattr(tok, name, None) is not None:
                return int(getattr(tok, name))
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to condition an empty context on")

    def _split(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if not context:
            cont = self.lm.encode(continuation)
            prefix = self.prefix_token_id
            return ([prefix], cont[1:]) if cont and cont[0] == prefix else ([prefix], cont)
        ctx, whole = self.lm.encode(context), self.lm.encode(context + continuation)
        return ctx, whole[len(ctx):]

    @torch.no_grad()
    def _score(self, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
        ids = (ctx + cont)[-(self.max_length + 1):]  # the context is cut from the left, as the harness does
        logits = self.lm.model(torch.tensor([ids[:-1]], device=self.lm.device))
        logits = (logits if isinstance(logits, torch.Tensor) else logits.logits)[0, -len(cont):].float()
        targets = torch.tensor(cont, device=logits.device)
        logprob = torch.log_softmax(logits, -1).gather(-1, targets[:, None]).sum()
        return float(logprob), bool((logits.argmax(-1) == targets).all())

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        return [self._score(*self._split(*req.args)) for req in requests]

    def loglikelihood_rolling(self, requests) -> list[float]:
        out = []
        for req in requests:
            ids = self.lm.encode(req.args[0])
            ids = ids if ids and ids[0] == self.prefix_token_id else [self.prefix_token_id, *ids]
            # disjoint windows of max_length targets, each seeing only the token before it
            total, _ = sliding_window_nll(self.lm, ids, window=self.max_length + 1, stride=self.max_length)
            out.append(-total)
        return out

    def generate_until(self, requests) -> list[str]:
        out = []
        for req in requests:
            context, kwargs = req.args
            if kwargs.get("do_sample"):
                raise ValueError("RopeLabHarnessLM decodes greedily; the task asks for do_sample=True")
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else until
            text = self.lm.generate_text(context, int(kwargs.get("max_gen_toks", self.max_gen_toks)))
            cut = min([text.index(s) for s in until if s and s in text], default=len(text))
            out.append(text[:cut])
        return out
