"""V-NIAH-D through a Qwen2-VL checkpoint's own processor (task.processor): a tiny random Qwen2-VL saved with
save_pretrained next to a processor built offline (a byte-level BPE tokenizer with Qwen2-VL's special tokens, a
chat template written here, transformers' Qwen2VLVideoProcessor). Checked against transformers itself: the
item is the processor's output plus the tokenizer's answer; our raw positions mapped by pe=mrope equal
``get_rope_index``; the logits equal the unmodified model's; every video pe runs the evaluation; a processor
of another model or a backbone that cannot take processor inputs is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from rope_lab.pe.registry import build_pe, compatible_pes
from rope_lab.run import build
from rope_lab.tasks.vniah.chat import chat_coords, chat_encoder
from rope_lab.tasks.vniah.datamodule import ANSWERS, VNIAHConfig, chat_question
from rope_lab.tasks.vniah.positions import vniah_positions

from ..pe.helpers import CONFIGS

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
# our own minimal Qwen-style template (a real checkpoint brings its own chat_template)
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
            "{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>{% else %}{{ c['text'] }}"
            "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
            "{% endif %}")
PIXELS = 32 * 32  # min/max pixels of the tiny video processor: 32x32 frames stay 32x32 (4x4 patches of 8)


def tiny_processor():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast, Qwen2VLImageProcessor, Qwen2VLProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    bpe = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))},
                               merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    tok = Qwen2TokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None)
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    sizes = dict(patch_size=8, temporal_patch_size=2, merge_size=2, min_pixels=PIXELS, max_pixels=4 * PIXELS)
    return Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**sizes), tokenizer=tok,
                            video_processor=Qwen2VLVideoProcessor(**sizes, do_sample_frames=False),
                            chat_template=TEMPLATE)


def tiny_model(tok):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    text = dict(vocab_size=len(tok), bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                intermediate_size=96, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]})
    vision = dict(depth=1, embed_dim=32, num_heads=2, hidden_size=64, in_channels=3, patch_size=8,
                  temporal_patch_size=2, spatial_merge_size=2)
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in [("video_token_id", "<|video_pad|>"),
                                                              ("image_token_id", "<|image_pad|>"),
                                                              ("vision_start_token_id", "<|vision_start|>"),
                                                              ("eos_token_id", "<|im_end|>"),
                                                              ("bos_token_id", "<|endoftext|>")]}
    return Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text, vision_config=vision,
                                                         vocab_size=len(tok), **ids)).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen2vl_tiny")
    processor = tiny_processor()
    processor.save_pretrained(path)
    tiny_model(processor.tokenizer).save_pretrained(path)
    return str(path)


def encoder(path: str):
    return chat_encoder(path, chat_question(VNIAHConfig()), tuple(ANSWERS))


def frames(n: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, 32, 32), dtype=np.uint8)


def test_item_is_the_processor_output_plus_the_tokenizers_answer(checkpoint):
    enc = encoder(checkpoint)
    item = enc.encode(frames(), label=9)
    tok = enc.processor.tokenizer
    text = tok.decode(item["tokens"])
    assert "<|vision_start|>" + "<|video_pad|>" * 16 + "<|vision_end|>" in text  # 4 grids x 2x2 merged tokens
    assert chat_question(VNIAHConfig()) in text and "T-shirt/top, Trouser" in text
    assert text.endswith("<|im_start|>assistant\nAnkle boot.<|endoftext|>")  # padded to "T-shirt/top." (longest)
    assert tok.decode(item["tokens"][1:][item["answer_mask"]]) == "Ankle boot."
    assert item["video_grid_thw"].tolist() == [4, 4, 4] and item["pixel_values_videos"].shape == (64, 3 * 2 * 8 * 8)


def test_mrope_ids_equal_transformers_get_rope_index(checkpoint):
    from transformers import Qwen2VLForConditionalGeneration

    enc = encoder(checkpoint)
    # 4 frames = 2 temporal grids <= max(H', W') = 2: transformers 5.x resumes text ids after a video at
    # start + max(H', W') instead of the paper's max id + 1, so the two agree only there (evaluation.md s.7)
    item = enc.encode(frames(4), 0)
    model = Qwen2VLForConditionalGeneration.from_pretrained(checkpoint)
    mm = (item["tokens"] == enc.video_token_id).long() * 2
    ref, _ = model.model.get_rope_index(item["tokens"][None], mm_token_type_ids=mm[None],
                                        video_grid_thw=item["video_grid_thw"][None])
    pe = build_pe({"name": "mrope"})
    ours = pe.position_map(vniah_positions(item["coords"][None], item["modality"][None], 2.0, False))
    assert torch.equal(ours[0].long().T, ref[:, 0])


def test_mrope_logits_equal_the_unmodified_model_on_processor_inputs(checkpoint):
    from transformers import Qwen2VLForConditionalGeneration

    from rope_lab.backbones.hf_qwen2vl import HFQwen2VL, HFQwen2VLConfig

    enc = encoder(checkpoint)
    item = enc.encode(frames(4), 3)  # T <= max(H', W'), as above
    ref = Qwen2VLForConditionalGeneration.from_pretrained(checkpoint, attn_implementation="sdpa").eval()
    ours = HFQwen2VL(HFQwen2VLConfig(pretrained=checkpoint), build_pe({"name": "mrope", "base": 1e6})).eval()
    tokens = item["tokens"][None]
    with torch.no_grad():
        expected = ref(input_ids=tokens, pixel_values_videos=item["pixel_values_videos"],
                       video_grid_thw=item["video_grid_thw"][None],
                       mm_token_type_ids=(tokens == enc.video_token_id).long() * 2).logits
        got = ours(tokens, vniah_positions(item["coords"][None], item["modality"][None], 2.0, False),
                   pixel_values_videos=item["pixel_values_videos"][None], video_grid_thw=item["video_grid_thw"][None])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def _cfg(checkpoint: str, pe: str, *extra: str, backbone: tuple[str, ...] | None = None):
    backbone = backbone or ("backbone=hf_qwen2vl", f"backbone.pretrained={checkpoint}")
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=[
            *backbone, "task=vniah_d", f"task.processor={checkpoint}", f"pe={pe}", "task.train_frames=8", "task.cycle=4", "task.eval_frames=[8]", "task.depths=[0.5]",
            "task.eval_samples=2", "task.eval_batch_size=2", "trainer.accelerator=cpu", *extra])


VIDEO_PES = compatible_pes(4, True, multimodal=True, axes=("index", "t", "row", "col"))


@pytest.mark.parametrize("pe", VIDEO_PES)
def test_every_video_pe_evaluates_vniah_d_through_the_processor(checkpoint, pe):
    from rope_lab.pe import build_pe as make

    if not getattr(make({"name": pe}), "is_rotary", False):  # hf_qwen2vl swaps the model's rotary frequencies only
        with pytest.raises(ValueError, match=f"pe={pe} is not a rotary variant"):
            build(_cfg(checkpoint, pe))
        return
    task, module, datamodule, model = build(_cfg(checkpoint, pe))
    datamodule.setup()
    (loader,) = datamodule.val_dataloader()
    batch = next(iter(loader))
    assert "pixel_values_videos" in batch and batch["tokens"].shape[0] == 2
    with torch.no_grad():
        logits, targets = module.eval()._forward(batch)
    assert logits.shape[-1] == model.hf.config.text_config.vocab_size and torch.isfinite(logits).all()


def test_eval_py_writes_the_vniah_d_grid_for_a_pretrained_qwen2vl(checkpoint, tmp_path):
    from rope_lab.evaluate import evaluate_from_configs

    argv = ["backbone=hf_qwen2vl", f"backbone.pretrained={checkpoint}", "task=vniah_d", f"task.processor={checkpoint}",
            "pe=videorope", "task.train_frames=8", "task.cycle=4", "task.eval_frames=[8,12]", "task.depths=[0.0,1.0]",
            "task.eval_samples=2", "task.eval_batch_size=2", "trainer.accelerator=cpu"]
    metrics = evaluate_from_configs(argv, str(tmp_path / "out"))
    assert {k for k in metrics if k.startswith("vniah_d/acc/")} == {
        f"vniah_d/acc/len={n}/depth={d}" for n in (8, 12) for d in ("0", "1")}
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["weights"] == checkpoint and saved["pe"] == "videorope"
    assert (tmp_path / "out" / "vniah_d_heatmap.png").is_file()


def test_a_foreign_processor_a_backbone_without_processor_inputs_or_byte_answer_decoding_is_refused(checkpoint, tmp_path):
    other = tiny_processor()
    other.tokenizer.add_special_tokens({"additional_special_tokens": ["<|extra|>"]})  # shifts nothing, grows vocab
    other.tokenizer.add_tokens([f"tok{i}" for i in range(8)])
    other.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="does not belong to the model"):
        build(_cfg(checkpoint, "mrope", f"task.processor={tmp_path}"))
    with pytest.raises(ValueError, match="backbone=video_llm does not take them"):
        build(_cfg(checkpoint, "mrope", backbone=("backbone=video_llm",)))
    with pytest.raises(ValueError, match="answer_choice decodes answers in the byte vocabulary"):
        build(_cfg(checkpoint, "mrope", "task.answer_choice=true"))


def test_chat_coords_refuse_a_grid_that_does_not_match_the_tokens():
    tokens = torch.tensor([1, 5, 5, 5, 2])
    with pytest.raises(ValueError, match="3 video tokens but video_grid_thw"):
        chat_coords(tokens, 5, torch.tensor([1, 4, 4]), 2)
