"""RULER-style generators (answer in the context, at the requested depth, within the length) and RULER's scoring:
a scripted oracle scores 1.0, a wrong model 0, partial answers get RULER's partial credit."""

from __future__ import annotations

import pytest

from rope_lab.longctx.causal_lm import ByteTokenizer, CausalLM
from rope_lab.longctx.corpus import python_reference_topics
from rope_lab.longctx.passkey import first_integer_matches, passkey_prompt, run_passkey
from rope_lab.longctx.prompts import split_sentences, string_match_all
from rope_lab.longctx.ruler import length_summary, run_ruler
from rope_lab.longctx.ruler_tasks import TASKS, ruler_sample
from tests.longctx.helpers import ScriptedByteLM

ESSAY = [s for s in split_sentences(python_reference_topics()[0].text) if len(s) < 150]  # short units: tight fits


def count_bytes(text: str) -> int:
    return len(text.encode())


@pytest.mark.parametrize("task", TASKS)
def test_generator_puts_every_answer_in_the_context_at_the_requested_depth(task):
    length = 2048
    for depth in (0.0, 0.5, 1.0):
        s = ruler_sample(task, length, depth, 0, seed=3, count_tokens=count_bytes, essay=ESSAY)
        context = s.prompt[: s.prompt.rindex("\n")]  # the question and answer prefix come after the context
        assert all(ref in context for ref in s.references)
        n_tokens = count_bytes(s.prompt)
        assert n_tokens + s.gen_tokens <= length and n_tokens + s.gen_tokens > length - 200  # filled to the length
        assert s.needle_depths[0] == pytest.approx(depth, abs=0.12)  # the first answer needle, in haystack units
        assert s.prompt == ruler_sample(task, length, depth, 0, 3, count_bytes, ESSAY).prompt  # reproducible
    deep = [ruler_sample(task, length, d, 0, 3, count_bytes, ESSAY).answer_depth for d in (0.0, 0.5, 1.0)]
    assert deep[0] < deep[1] < deep[2]


def test_distractors_and_queries_follow_the_task_definitions():
    mk = ruler_sample("niah_multikey_1", 2048, 0.5, 0, 1, count_bytes, ESSAY)
    assert mk.prompt.count("One of the special magic numbers for") == 4 and len(mk.references) == 1
    mv = ruler_sample("niah_multivalue", 2048, 0.5, 0, 1, count_bytes, ESSAY)
    assert len(mv.references) == 4 and mv.prompt.endswith("mentioned in the provided text are")
    mq = ruler_sample("niah_multiquery", 2048, 0.5, 0, 1, count_bytes, ESSAY)
    assert len(mq.references) == 4 and ", and " in mq.prompt.splitlines()[-1]
    single = ruler_sample("niah_single_1", 2048, 0.5, 0, 1, count_bytes, ESSAY)
    assert single.prompt.endswith("mentioned in the provided text is") and len(single.references) == 1
    needle_hay = ruler_sample("niah_multikey_2", 2048, 0.5, 0, 1, count_bytes, ESSAY)
    assert needle_hay.prompt.count("One of the special magic numbers for") > 10  # every line is a needle
    vt = ruler_sample("vt", 2048, 0.5, 0, 1, count_bytes, ESSAY)
    assert len(vt.references) == 5 and all(len(n) == 5 and n.isupper() for n in vt.references)


def test_string_match_all_is_rulers_partial_credit():
    assert string_match_all("The numbers are 1111 and 3333.", ["1111", "2222", "3333", "4444"]) == 0.5
    assert string_match_all("  ABCDE\x00fghij ", ["abcde", "FGHIJ"]) == 1.0  # case-insensitive, control chars
    assert string_match_all("", ["1"]) == 0.0


def test_length_summary_uses_rulers_index_weights_and_threshold():
    got = length_summary({4096: 1.0, 1024: 0.9, 2048: 0.5}, threshold=0.85)
    assert got["ruler/avg"] == pytest.approx(2.4 / 3)
    assert got["ruler/wavg_inc"] == pytest.approx((1 * 0.9 + 2 * 0.5 + 3 * 1.0) / 6)
    assert got["ruler/wavg_dec"] == pytest.approx((3 * 0.9 + 2 * 0.5 + 1 * 1.0) / 6)
    assert got["ruler/effective_length"] == 4096.0


def test_oracle_scores_one_and_wrong_model_zero():
    oracle = CausalLM(ScriptedByteLM(), ByteTokenizer())
    metrics, records = run_ruler(oracle, list(TASKS), [1024], [0.5], 1, 0, ESSAY, 0.856)
    assert all(metrics[f"ruler/{t}/len=1024"] == 1.0 for t in TASKS) and metrics["ruler/avg"] == 1.0
    assert metrics["ruler/effective_length"] == 1024.0 and len(records) == len(TASKS)
    wrong = CausalLM(ScriptedByteLM(lambda prompt: " 0000000 AAAAA"), ByteTokenizer())
    metrics, _ = run_ruler(wrong, ["niah_multivalue", "vt"], [1024], [0.5], 1, 0, ESSAY, 0.856)
    assert metrics["ruler/avg"] == 0.0 and metrics["ruler/effective_length"] == 0.0


def test_passkey_prompt_fits_the_length_and_the_oracle_finds_every_key():
    lm = CausalLM(ScriptedByteLM(), ByteTokenizer())
    shallow, deep = (passkey_prompt(lm, 1024, d, 4242, 10) for d in (0.0, 1.0))
    assert "The pass key is 4242. Remember it." in shallow.text and count_bytes(shallow.text) + 10 <= 1024
    assert shallow.key_depth < 0.3 < 0.8 < deep.key_depth
    metrics, records = run_passkey(lm, [512], [0.0, 1.0], trials=2, seed=0)
    assert metrics == {"passkey/len=512/depth=0.0": 1.0, "passkey/len=512/depth=1.0": 1.0, "passkey/len=512": 1.0}
    assert len({r["key"] for r in records}) > 1
    wrong, _ = run_passkey(CausalLM(ScriptedByteLM(lambda p: " 99999999"), ByteTokenizer()), [512], [0.5], 2, 0)
    assert wrong["passkey/len=512"] == 0.0
    assert first_integer_matches(" 123 is it, not 7", 123) and not first_integer_matches("1234", 123)


def test_bad_task_depth_and_too_short_length_are_clear_errors():
    with pytest.raises(ValueError, match="unknown RULER task 'qa_1'; choose from"):
        ruler_sample("qa_1", 1024, 0.5, 0, 0, count_bytes, ESSAY)
    with pytest.raises(ValueError, match="depth must be in"):
        ruler_sample("vt", 1024, 1.5, 0, 0, count_bytes, ESSAY)
    with pytest.raises(ValueError, match="length 200 tokens is too short"):
        ruler_sample("niah_single_1", 200, 0.5, 0, 0, count_bytes, ESSAY)
