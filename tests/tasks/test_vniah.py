"""V-NIAH / V-NIAH-D: sequence construction, distractor placement (VideoRoPE's rule), clear errors, the
build-time refusal of a PE that cannot encode video positions, and that 3-D ids really reach the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from rope_lab.backbones.video_llm import VideoLLM, VideoLLMConfig
from rope_lab.data.video_frames import folder_sequences
from rope_lab.optim import OptimConfig
from rope_lab.pe import build_pe
from rope_lab.pe import TEXT, VIDEO
from rope_lab.run import build, register_resolvers
from rope_lab.tasks.vniah.datamodule import ANSWERS, VNIAHBuilder, VNIAHConfig, check_config
from rope_lab.tasks.vniah.module import VNIAHModule
from rope_lab.tasks.vniah.needles import LOOK_ALIKE, NeedleBank, distractor_slot
from rope_lab.tasks.vniah.task import VNIAHDTask

from ..pe.helpers import CONFIGS


def fake_bank(n: int = 50) -> NeedleBank:
    rng = np.random.default_rng(0)
    return NeedleBank(rng.integers(0, 255, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10)


def builder(**cfg) -> VNIAHBuilder:
    c = VNIAHConfig(**{"distractors": True, "cycle": 4, **cfg})
    pool = np.full((40, 32, 32), 7, dtype=np.uint8)  # a flat grey haystack: needle/distractor grids stand out
    return VNIAHBuilder(c, pool, fake_bank())


def test_sequence_layout_and_answer():
    b = builder()
    item = b.item(np.random.default_rng(0), 16, 0.5)
    seg = b.segments(10)  # 8 haystack grids + needle + distractor
    assert item["tokens"].shape == (seg.length,) and item["video"].shape == (20, 1, 32, 32)
    coords, mod = item["coords"], item["modality"]
    assert (mod[: seg.prompt] == TEXT).all() and (mod[seg.prompt : seg.prompt + 40] == VIDEO).all()
    assert coords[seg.prompt : seg.prompt + 4, 1:].tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]]
    assert coords[seg.prompt + 39, 1:].tolist() == [9, 1, 1]
    answer = bytes(item["tokens"][1:][item["answer_mask"]].tolist()).decode()
    assert answer == ANSWERS[item["label"]]


def test_needle_at_depth_and_distractor_cycle_apart():
    b = builder()
    for depth, needle_grid in [(0.0, 0), (0.5, 4), (1.0, 8)]:
        video = b.item(np.random.default_rng(1), 16, depth)["video"][::2, 0]
        bordered = [i for i, f in enumerate(video) if (f[0] == 1.0).all() and (f[:, 0] == 1.0).all()]
        assert bordered == [needle_grid] or bordered == [needle_grid + 1]
        odd = [i for i, f in enumerate(video) if not torch.allclose(f, video.new_full(f.shape, 7 / 127.5 - 1))]
        assert len(odd) == 2 and abs(odd[1] - odd[0]) in (2, 3)  # cycle = 4 frames = 2 grids (+1: insertion)


def test_distractor_slot_rule():
    rng = np.random.default_rng(0)
    assert distractor_slot(1, 10, 4, rng) == 5  # too close to the start: after
    assert distractor_slot(9, 10, 4, rng) == 5  # too close to the end: before
    assert distractor_slot(2, 5, 4, rng) is None  # neither side fits: omitted
    assert {distractor_slot(5, 10, 4, np.random.default_rng(s)) for s in range(20)} == {1, 9}


def test_distractor_is_a_look_alike_of_another_class():
    bank = fake_bank()
    for cls in range(10):
        _, other = bank.distractor(np.random.default_rng(cls), cls)
        assert other != cls and other in LOOK_ALIKE[cls]


@pytest.mark.parametrize("bad, match", [
    ({"depths": [0.5, 1.2]}, "depth must be in \\[0, 1\\]"),
    ({"frame_size": 40}, "merge_size"),
    ({"train_frames": 15}, "temporal_patch_size"),
    ({"distractors": True, "cycle": 16, "train_frames": 16}, "2 \\* cycle"),
])
def test_bad_config_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        check_config(VNIAHConfig(**bad))


def test_empty_frame_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        folder_sequences(str(tmp_path), 32)


def _compose(*overrides):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def test_headline_command_composes_the_video_backbone():
    cfg = _compose("pe=videorope", "task=vniah_d")
    assert cfg.backbone.name == "video_llm" and cfg.task.distractors is True
    assert _compose("pe=videorope", "task=vniah_d", "backbone=hf_qwen2vl").backbone.name == "hf_qwen2vl"


def test_axial_rope_is_refused_with_the_compatible_variants():
    with pytest.raises(ValueError, match=r"pe=rope_axial.*compatible variants: \[.*'mrope'.*'videorope'.*\]"):
        build(_compose("pe=rope_axial", "task=vniah_d"))


def test_three_d_ids_reach_the_model_in_training():
    """Fails if the task's 3-D (t, h, w) coords collapse to 1-D before the PE (Qwen3-VL #488)."""
    task = VNIAHDTask(VNIAHDTask.Config(cycle=4))
    model = VideoLLM(VideoLLMConfig(dim=32, depth=1, n_heads=2, n_kv_heads=2, mlp_hidden=64, encoder_dim=16,
                                    encoder_depth=1, encoder_heads=2, encoder_mlp_hidden=32),
                     build_pe({"name": "mrope"}), task.spec())
    module = VNIAHModule(model, OptimConfig(), 10, "vniah_d", [(16, 0.5)], 2.0)
    module.log = lambda *a, **k: None
    b = builder()
    items = [b.item(np.random.default_rng(i), 16, 0.5) for i in range(2)]
    batch = {k: torch.stack([it[k] for it in items]) for k in ("tokens", "video", "coords", "modality",
                                                                 "answer_mask")}
    seen = []
    original = model.pe.position_map
    model.pe.position_map = lambda pos, cache=None: seen.append((pos, original(pos, cache))) or seen[-1][1]
    module.train()
    module.training_step(batch, 0).backward()
    pos, mapped = seen[0]
    vision = pos.modality == VIDEO
    assert pos.num_axes == 4 and vision.any()
    assert pos.coords[vision][:, 1:].unique(dim=0).shape[0] == 40  # every (t, h, w) distinct
    assert not torch.equal(mapped[..., 1][vision], mapped[..., 2][vision])  # h and w rows differ
    flat = pos.coords.clone()
    flat[..., 1:] = 0
    with torch.no_grad():
        module.eval()
        a = model(batch["tokens"][:, :-1], pos, video=batch["video"])
        from rope_lab.pe import Positions
        b2 = model(batch["tokens"][:, :-1], Positions(flat, pos.modality, meta=pos.meta), video=batch["video"])
    assert not torch.allclose(a, b2)  # the logits depend on the 3-D coords


def test_answer_choice_logs_outcomes_that_add_up_and_decoding_matches_teacher_forcing_when_right():
    """task.answer_choice: greedy decoding on a real (untrained) video LLM; the four outcome shares sum to 1, and
    whenever teacher-forced exact match holds the greedy answer is the needle's (same argmax path)."""
    from rope_lab.tasks.vniah.datamodule import ANSWER_LEN, ANSWERS, PAD
    from rope_lab.tasks.vniah.metrics import answer_exact_match, classify_answers, greedy_answer

    task = VNIAHDTask(VNIAHDTask.Config(cycle=4, answer_choice=True))
    model = VideoLLM(VideoLLMConfig(dim=32, depth=1, n_heads=2, n_kv_heads=2, mlp_hidden=64, encoder_dim=16,
                                    encoder_depth=1, encoder_heads=2, encoder_mlp_hidden=32),
                     build_pe({"name": "videorope"}), task.spec())
    module = VNIAHModule(model, OptimConfig(), 10, "vniah_d", [(16, 0.5)], 2.0, answer_choice=True).eval()
    logged = {}
    module.log = lambda name, value, **k: logged.__setitem__(name, float(value))
    b = builder(distractors=True, cycle=4)
    items = [b.item(np.random.default_rng(i), 16, 0.5) for i in range(3)]
    batch = {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}
    assert (batch["distractor"] >= 0).all()  # depth 0.5 of 16 frames: the distractor fits
    with torch.no_grad():
        module.validation_step(batch, 0)
        for name, metric in module.outcomes.items():
            logged[f"vniah_d/answer/{name}"] = float(metric.compute())
        logits, targets = module._forward(batch)
        exact = answer_exact_match(logits, targets, batch["answer_mask"])
        start = int(batch["answer_mask"][0].nonzero()[0]) + 1
        decoded = greedy_answer(lambda t: module._forward({**batch, "tokens": t})[0], batch["tokens"], start,
                                ANSWER_LEN, PAD)
    shares = [logged[f"vniah_d/answer/{k}"] for k in ("correct", "distractor", "other", "invalid")]
    assert sum(shares) == pytest.approx(1.0)
    chosen = classify_answers(decoded, ANSWERS)
    for hit, c, label in zip(exact.tolist(), chosen, batch["label"].tolist()):
        if hit:
            assert c == label


def test_summary_table_and_side_by_side_heatmaps(tmp_path):
    import json

    from rope_lab.analysis.results import load_runs
    from rope_lab.analysis.tables.vniah import vniah_d_tables

    for i, (pe, acc) in enumerate([("videorope", 0.9), ("mrope", 0.6)]):
        run = tmp_path / f"{i}_pe={pe}"
        run.mkdir()
        metrics = {f"vniah_d/acc/len={n}/depth={d:g}": acc for n in (16, 32) for d in (0.0, 0.5, 1.0)}
        metrics["vniah_d/acc"] = acc
        (run / "results.json").write_text(json.dumps({"metrics": metrics, "task": "vniah_d", "pe": pe}))
        (run / "run_config.yaml").write_text(f"pe: {{name: {pe}}}\n")  # a training run's record (load_runs)
    table, plot = vniah_d_tables(load_runs(tmp_path), tmp_path)
    text = table.read_text()
    assert text.index("mrope") < text.index("videorope")  # paper order: rope, tad_rope, mrope, videorope, ...
    assert "| mrope | 0.6 | 0.6 | 0.6 |" in text and plot.stat().st_size > 0
