"""AnchorAttention: mask and position ids against a naive construction, equivalence with running each document
alone behind the anchor, and the ``task.packing=true`` path of the LM task."""

from __future__ import annotations

import pytest
import torch

from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.pe import Positions, build_pe
from rope_lab.pe.variants.text.anchor import ANCHOR_SEGMENT, anchor_keep_mask
from rope_lab.tasks.lm.datamodule import LMDataConfig, LMDataModule

from .helpers import parallel_and_incremental, pe_config


def naive_mask(seg: list[int]) -> torch.Tensor:
    n = len(seg)
    return torch.tensor([[j <= i and (seg[i] == seg[j] or seg[j] == ANCHOR_SEGMENT) for j in range(n)]
                         for i in range(n)])


def test_mask_matches_naive_construction():
    seg = torch.tensor([[0, 1, 1, 1, 2, 2, 3, 3, 3, 3], [0, 1, 2, 2, 2, 2, 2, 3, 4, 4]])
    got = anchor_keep_mask(seg, seg)
    for b in range(2):
        assert torch.equal(got[b, 0], naive_mask(seg[b].tolist()))


def test_position_map_pins_the_anchor_and_keeps_documents_continuous():
    pe = build_pe(pe_config("anchor"))
    seg = torch.tensor([[0, 1, 1, 2, 2, 2]])
    pos = Positions(coords=torch.arange(500, 506.0)[None, :, None], segment=seg)
    mapped = pe.position_map(pos)[0, :, 0]
    assert mapped.tolist() == [0.0, 501.0, 502.0, 503.0, 504.0, 505.0]


def _model(name: str) -> Decoder:
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=64, dim=32, depth=2, n_heads=2, n_kv_heads=1, mlp_hidden=64, init_std=0.3)
    return Decoder(cfg, build_pe(pe_config(name))).eval()


def test_packed_document_equals_the_document_alone_behind_the_anchor():
    model = _model("anchor")
    tokens = torch.randint(1, 64, (1, 12))
    tokens[0, 0] = 0  # the anchor byte
    seg = torch.tensor([[0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3]])
    offset = 300
    with torch.no_grad():
        packed = model(tokens, Positions(coords=torch.arange(offset, offset + 12.0)[None, :, None], segment=seg))
        for doc in (1, 2, 3):
            idx = torch.cat([torch.tensor([0]), (seg[0] == doc).nonzero()[:, 0]])
            coords = torch.cat([torch.zeros(1), offset + idx[1:].float()])[None, :, None]
            alone = model(tokens[:, idx], Positions(coords=coords))
            torch.testing.assert_close(packed[:, idx[1:]], alone[:, 1:], rtol=1e-5, atol=1e-5)


def test_without_segments_anchor_is_rope():
    tokens = torch.randint(0, 64, (2, 10))
    pos = Positions.sequence(2, 10, start=7)
    with torch.no_grad():
        assert torch.equal(_model("anchor")(tokens, pos), _model("rope")(tokens, pos))


def test_packed_kv_cache_decoding_equals_parallel():
    model = _model("anchor")
    tokens = torch.randint(1, 64, (1, 10))
    pos = Positions(coords=torch.arange(10.0)[None, :, None], segment=torch.tensor([[0, 1, 1, 1, 2, 2, 2, 3, 3, 3]]))
    full, decoded, cache = parallel_and_incremental(model, tokens, pos, 4)
    torch.testing.assert_close(decoded, full, rtol=1e-5, atol=1e-5)


# -- the LM task's packing path ----------------------------------------------------------------------------

def _datamodule(tmp_path, **kw) -> LMDataModule:
    for i in range(12):
        (tmp_path / f"doc{i:02d}.txt").write_text(f"document {i} " + "abcdefgh" * (3 + i))
    cfg = LMDataConfig(corpus="files", data_path=str(tmp_path), data_dir=str(tmp_path), val_fraction=0.3,
                       train_length=64, batch_size=2, eval_lengths=[32], passkey_lengths=[], **kw)
    dm = LMDataModule(cfg, seed=0, total_steps=2)
    dm.setup()
    return dm


def test_packing_windows_carry_document_ids_and_anchor(tmp_path):
    dm = _datamodule(tmp_path, packing=True, anchor_token=0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["tokens"].shape == batch["segment"].shape == (2, 65)
    assert bool((batch["tokens"][:, 0] == 0).all()) and bool((batch["segment"][:, 0] == ANCHOR_SEGMENT).all())
    seg = batch["segment"][:, 1:]
    assert bool((seg[:, 0] == 1).all()) and bool((seg.diff(dim=1) >= 0).all()) and int(seg.max()) > 1
    # a document boundary is where the text of the next document starts
    b, j = (seg.diff(dim=1) > 0).nonzero()[0].tolist()
    text = bytes(batch["tokens"][b, 2 + j : 2 + j + 9].tolist()).decode()
    assert text.startswith("document ")
    val = next(iter(dm.val_dataloader()[0]))
    assert val["segment"].shape == val["tokens"].shape


def test_packing_errors(tmp_path):
    with pytest.raises(ValueError, match="anchor_token=97 occurs in the corpus"):
        _datamodule(tmp_path, packing=True, anchor_token=97)
    with pytest.raises(ValueError, match="anchor_token needs task.packing=true"):
        _datamodule(tmp_path, anchor_token=0)
