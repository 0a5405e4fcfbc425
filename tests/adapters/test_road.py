"""``adapter=road`` and ``adapter=lora`` (rope_lab/adapters/, layers from HF peft): RoAd's outputs equal the paper's
equation computed here by hand for every variant (random, non-identity parameters), its parameter counts the
paper's, identity at init; LoRA starts as the base model; applying an adapter freezes everything but it (and
``trainable``); clear errors for bad input; ``python train.py adapter=road`` adapts a finished run's checkpoint."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rope_lab.adapters import apply_adapter
from rope_lab.adapters.road import VARIANTS

pytest.importorskip("peft")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(24, 32)
        self.k_proj = nn.Linear(24, 32, bias=False)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        return self.head(self.q_proj(x) + self.k_proj(x))


def paper_road(y: torch.Tensor, theta: torch.Tensor, alpha: torch.Tensor, variant: str, g: int) -> torch.Tensor:
    """RoAd's equation (arXiv 2409.00119, eq. 4 with peft's grouping): in each group of g outputs, (x1, x2) =
    (y[k], y[k + g/2]) -> (c1 x1 - s1 x2, s2 x1 + c2 x2), coefficients per variant."""
    h = g // 2
    y = y.double().unflatten(-1, (-1, 2, h))
    x1, x2 = y[..., 0, :], y[..., 1, :]
    th, al = theta.double(), alpha.double()
    if variant == "road_1":  # (G, h): one angle and scale per pair
        c1 = c2 = al.view(-1, h) * th.view(-1, h).cos()
        s1 = s2 = al.view(-1, h) * th.view(-1, h).sin()
    elif variant == "road_2":  # (G, 2, h): one per element
        c = al.view(-1, 2, h) * th.view(-1, 2, h).cos()
        s = al.view(-1, 2, h) * th.view(-1, 2, h).sin()
        c1, c2, s1, s2 = c[:, 0], c[:, 1], s[:, 0], s[:, 1]
    else:  # road_4, (G, 2, g): the cos entries' (theta, alpha), then the sin entries'
        th, al = th.view(-1, 2, g), al.view(-1, 2, g)
        c = (al[:, 0] * th[:, 0].cos()).view(-1, 2, h)
        s = (al[:, 1] * th[:, 1].sin()).view(-1, 2, h)
        c1, c2, s1, s2 = c[:, 0], c[:, 1], s[:, 0], s[:, 1]
    return torch.stack((c1 * x1 - s1 * x2, s2 * x1 + c2 * x2), dim=-2).flatten(-3)


def _road(variant="road_1", **kw):
    torch.manual_seed(0)
    base = Tiny()
    model = apply_adapter(copy.deepcopy(base), {"name": "road", "variant": variant, "group_size": 16,
                                               "target_modules": ["q_proj"], **kw})
    return base, model


@pytest.mark.parametrize("variant", VARIANTS)
def test_outputs_follow_the_papers_equation(variant):
    base, model = _road(variant, init_weights=False)
    layer = model.q_proj
    x = torch.randn(5, 7, 24)
    got = layer(x)
    want = paper_road(base.q_proj(x), layer.road_theta["default"], layer.road_alpha["default"], variant, 16)
    assert not torch.allclose(got, base.q_proj(x), atol=1e-2)  # the random adapter is far from the identity
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("variant", "per_feature"), [("road_1", 0.5), ("road_2", 1), ("road_4", 2)])
def test_parameter_counts_and_identity_at_init(variant, per_feature):
    base, model = _road(variant)
    layer = model.q_proj
    assert layer.road_theta["default"].numel() == layer.road_alpha["default"].numel() == 32 * per_feature
    x = torch.randn(3, 24)
    torch.testing.assert_close(model(x), base(x), rtol=0, atol=0)


def test_road_1_is_a_scaled_rotation_of_each_pair():
    """road_1 with alpha = a keeps pair norms times a (R^T R = a^2 I)."""
    _, model = _road("road_1", init_weights=False)
    layer = model.q_proj
    with torch.no_grad():
        layer.road_alpha["default"].fill_(1.7)
    y = torch.randn(6, 32)
    rotated = paper_road(y, layer.road_theta["default"], layer.road_alpha["default"], "road_1", 16)
    norms = lambda t: t.unflatten(-1, (-1, 2, 8)).norm(dim=-2)  # noqa: E731 - the pair (k, k + 8) of each group
    torch.testing.assert_close(norms(rotated), 1.7 * norms(y.double()))


def test_lora_starts_as_the_base_model_with_r_times_in_plus_out_parameters():
    torch.manual_seed(0)
    base = Tiny()
    model = apply_adapter(copy.deepcopy(base), {"name": "lora", "r": 2, "target_modules": ["q_proj", "k_proj"]})
    x = torch.randn(3, 24)
    torch.testing.assert_close(model(x), base(x))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * 2 * (24 + 32)


@pytest.mark.parametrize("name", ["road", "lora"])
def test_apply_freezes_all_but_the_adapter_and_trainable(name):
    cfg = {"group_size": 16} if name == "road" else {"r": 1}
    model = apply_adapter(Tiny(), {"name": name, "target_modules": ["q_proj"], "trainable": ["head"], **cfg})
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head", "q_proj"}
    assert all(not p.requires_grad for n, p in model.named_parameters() if "base_layer" in n or "k_proj" in n)


@pytest.mark.parametrize(("cfg", "message"), [
    ({"name": "road", "variant": "1"}, "unknown RoAd variant '1'; choose one of ['road_1', 'road_2', 'road_4']"),
    ({"name": "road", "group_size": 64, "target_modules": ["q_proj"]},
     "adapter=road on 'q_proj': group_size=64 must be even and divide its out_features=32; choose adapter.group_size from [2, 4, 8, 16, 32]"),
    ({"name": "road", "target_modules": ["qkv"]},
     "match no nn.Linear of Tiny; its linear layers are named ['head', 'k_proj', 'q_proj']"),
    ({"name": "lora", "target_modules": ["q_proj"], "trainable": ["lm_head"]}, "adapter.trainable names 'lm_head'"),
    ({"name": "lora", "r": 0}, "adapter=lora needs r >= 1; got r=0"),
    ({"name": "road", "rank": 4}, "has no option(s) ['rank']"),
    ({"name": "dora"}, "unknown adapter 'dora'; choose one of: ['lora', 'road']"),
])
def test_bad_input_is_a_clear_error(cfg, message):
    with pytest.raises(ValueError) as err:
        apply_adapter(Tiny(), cfg)
    assert message in str(err.value)


def test_train_py_adapts_a_finished_run(tmp_path):
    """Pretrain a tiny LM, then `adapter=road init_ckpt=...`: the base weights are the checkpoint's, frozen;
    only RoAd's parameters change."""
    from tests.test_train import train

    train(tmp_path / "base", "trainer.max_steps=2", "trainer.val_check_interval=2")
    (base_dir,) = (tmp_path / "base" / "outputs" / "lm_longctx" / "rope").glob("*/*")
    ckpt = base_dir / "checkpoints" / "last.ckpt"
    train(tmp_path / "road", "trainer.max_steps=2", "trainer.val_check_interval=2", "adapter=road",
          "adapter.group_size=16", f"init_ckpt={ckpt}", "optim.lr=1e-2")
    (road_dir,) = (tmp_path / "road" / "outputs" / "lm_longctx" / "rope").glob("*/*")
    base = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    adapted = torch.load(road_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    road = {k for k in adapted if ".road_" in k}
    unwrapped = {k.replace(".base_layer.", "."): v for k, v in adapted.items() if k not in road}
    assert road and set(unwrapped) == set(base)
    assert all(torch.equal(unwrapped[k], base[k]) for k in base)  # frozen: the pretrained weights, unchanged
    assert any(adapted[k].abs().sum() > 0 for k in road if "road_theta" in k)  # RoAd trained away from 0


def test_init_ckpt_of_another_model_or_a_missing_file_is_a_clear_error(tmp_path):
    from rope_lab.run import load_model_weights

    torch.save({"state_dict": {"model.q_proj.weight": torch.zeros(2, 2)}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="does not fit this model"):
        load_model_weights(Tiny(), str(tmp_path / "other.ckpt"))
    with pytest.raises(FileNotFoundError, match="init_ckpt=.*missing.ckpt is not a file"):
        load_model_weights(Tiny(), str(tmp_path / "missing.ckpt"))
