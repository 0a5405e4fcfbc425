"""Known-answer tests for every metric that produces headline numbers.

Each test feeds a small hand-made batch whose answer is worked out by hand in the comments. Where a metric is
aggregated by a LightningModule over several validation loaders (one per length / resolution / cell), the test
runs ``Trainer.validate`` with a stub model whose logits are a fixed function of its input, so the logged value
under each name (``val/ppl@L``, ``val/passkey@...``, ``vniah_d/acc/len=N/depth=d``, ``val/acc@res=R``) can be
checked against the hand-computed value of THAT loader.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from rope_lab.optim import OptimConfig

LN2 = math.log(2.0)


def _validate(module: L.LightningModule, loaders: list[DataLoader], root) -> dict[str, float]:
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=str(root))
    trainer.validate(module, dataloaders=loaders, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


# ---------------------------------------------------------------------------------------------------------------
# LM: val/ppl@L and passkey exact match
# ---------------------------------------------------------------------------------------------------------------


class BigramStub(nn.Module):
    """Next-token distribution depends only on the current token (vocabulary {0, 1, 2, 3}):
    after 0: uniform (1/4 each)            -> NLL of any target = ln 4 = 2 ln 2
    after r in {1, 2, 3}: p(r) = 1/2, p(other) = 1/6  -> NLL of target r = ln 2, argmax = r ("repeat")."""

    def __init__(self) -> None:
        super().__init__()
        table = torch.full((4, 4), 1 / 6)
        table[0] = 1 / 4
        for r in (1, 2, 3):
            table[r, r] = 1 / 2
        self.register_buffer("log_table", table.log())
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, tokens, positions, **_):
        return self.log_table[tokens] + 0 * self.dummy


def _lm_items(rows: list[list[int]], answer_digits: int = 0) -> list[dict]:
    items = []
    for r in rows:
        t = torch.tensor(r)
        item = {"tokens": t, "loss_mask": torch.ones(len(r) - 1, dtype=torch.bool)}
        if answer_digits:
            mask = torch.zeros(len(r) - 1, dtype=torch.bool)
            mask[-answer_digits:] = True
            item["answer_mask"] = mask
        items.append(item)
    return items


def test_token_nll_and_perplexity_by_hand():
    from rope_lab.tasks.lm.metrics import perplexity, token_nll, window_nll

    model = BigramStub()
    tokens = torch.tensor([[0, 0, 1, 1, 1]])  # inputs 0 0 1 1 -> targets 0 1 1 1
    with torch.no_grad():
        nll = token_nll(model(tokens[:, :-1], None), tokens[:, 1:])
    # from 0: ln 4 twice; from 1 to 1: ln 2 twice -> [2ln2, 2ln2, ln2, ln2], mean 1.5 ln2, ppl 2^1.5
    torch.testing.assert_close(nll, torch.tensor([[2 * LN2, 2 * LN2, LN2, LN2]]))
    torch.testing.assert_close(window_nll(nll), torch.tensor([1.5 * LN2]))
    assert float(perplexity(window_nll(nll)[0])) == pytest.approx(2 ** 1.5)
    assert perplexity(1.5 * LN2) == pytest.approx(2 ** 1.5)


def test_passkey_exact_match_needs_every_digit():
    from rope_lab.tasks.lm.metrics import passkey_exact_match

    V = 10
    targets = torch.tensor([[7, 1, 2, 3], [7, 1, 2, 3], [7, 1, 2, 3], [7, 1, 2, 3]])
    preds = torch.tensor([[0, 1, 2, 3],   # non-answer position wrong, all 3 digits right -> hit
                          [7, 1, 2, 9],   # 2 of 3 digits right -> miss (an "any" or mean would not say 0)
                          [7, 9, 9, 9],   # no digit right -> miss
                          [7, 1, 2, 3]])  # everything right -> hit
    logits = nn.functional.one_hot(preds, V).float()
    mask = torch.tensor([[False, True, True, True]] * 4)
    hit = passkey_exact_match(logits, targets, mask)
    assert hit.tolist() == [True, False, False, True]  # accuracy 2/4


def test_lm_validation_logs_each_length_under_its_own_name(tmp_path):
    """Two ppl loaders of different lengths + two passkey loaders through LMModule's validation loop."""
    from rope_lab.tasks.lm.module import LMModule

    names = ["ppl@4", "ppl@8", "passkey@len=8/depth=0.5", "passkey@len=8/depth=1.0"]
    module = LMModule(BigramStub(), OptimConfig(), total_steps=1, val_names=names, train_length=4)
    # ppl@4: windows of 4 predictions, batch size 1 (the mean must run across batches)
    #   [0,0,0,0,0]: 4 x ln4 = 8 ln2;  [1,1,1,1,1]: 4 x ln2 = 4 ln2
    #   mean token NLL = 12 ln2 / 8 = 1.5 ln2 -> ppl@4 = 2^1.5 = 2.828 (mean of window ppls would be 3.0)
    ppl4 = _lm_items([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    # ppl@8: one window [0,0,1,1,1,1,1,1,1]: targets 0,1 after 0 (2 x ln4) + six 1->1 (6 x ln2) = 10 ln2
    #   mean NLL = 10 ln2 / 8 = 1.25 ln2 -> ppl@8 = 2^1.25 = 2.378
    ppl8 = _lm_items([[0, 0, 1, 1, 1, 1, 1, 1, 1]])
    # passkey, 3-digit answers = the last 3 targets; the stub predicts "repeat the current token" after 1..3
    pk_a = _lm_items([
        [2, 2, 2, 2, 2, 2, 2, 2, 2],  # digits 2,2,2 from inputs 2,2,2 -> hit
        [2, 2, 2, 2, 2, 2, 2, 2, 3],  # digits 2,2,3, predicted 2,2,2 -> 2 of 3 -> miss
        [0, 3, 1, 2, 0, 1, 1, 1, 1],  # non-answer targets wrong, digits 1,1,1 from 1,1,1 -> hit
        [2, 2, 2, 2, 2, 1, 2, 3, 1],  # digits 2,3,1, predicted 1,2,3 -> miss
    ], answer_digits=3)  # -> 2/4 = 0.5  (all->any would give 3/4)
    pk_b = _lm_items([[3, 3, 3, 3, 3, 3, 3, 3, 3]], answer_digits=3)  # -> 1/1 = 1.0
    loaders = [DataLoader(ppl4, batch_size=1), DataLoader(ppl8, batch_size=1), DataLoader(pk_a, batch_size=3),
               DataLoader(pk_b, batch_size=2)]
    m = _validate(module, loaders, tmp_path)
    assert {"val/ppl@4", "val/ppl@8", "val/loss@4", "val/loss@8", "val/ppl",
            "val/passkey@len=8/depth=0.5", "val/passkey@len=8/depth=1.0", "val/passkey@len=8",
            "val/passkey_acc"} == set(m)
    assert m["val/ppl@4"] == pytest.approx(2 ** 1.5, rel=1e-5)
    assert m["val/loss@4"] == pytest.approx(1.5 * LN2, rel=1e-5)
    assert m["val/ppl@8"] == pytest.approx(2 ** 1.25, rel=1e-5)
    assert m["val/loss@8"] == pytest.approx(1.25 * LN2, rel=1e-5)
    assert m["val/ppl"] == pytest.approx(2 ** 1.5, rel=1e-5)  # the training length
    assert m["val/passkey@len=8/depth=0.5"] == pytest.approx(0.5)
    assert m["val/passkey@len=8/depth=1.0"] == pytest.approx(1.0)
    assert m["val/passkey_acc"] == pytest.approx(0.75)  # mean over the two passkey cells
    assert m["val/passkey@len=8"] == pytest.approx(0.75)  # mean over the depths of that length


def test_val_ppl_is_read_at_the_training_length_wherever_it_is_listed(tmp_path):
    """val/ppl (checkpoint selection, sweep headline) is the training length's, not the first listed length's."""
    from rope_lab.tasks.lm.module import LMModule

    module = LMModule(BigramStub(), OptimConfig(), total_steps=1, val_names=["ppl@4", "ppl@8"], train_length=8)
    loaders = [DataLoader(_lm_items([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]]), batch_size=1),
               DataLoader(_lm_items([[0, 0, 1, 1, 1, 1, 1, 1, 1]]), batch_size=1)]
    m = _validate(module, loaders, tmp_path)
    assert m["val/ppl"] == pytest.approx(2 ** 1.25, rel=1e-5)  # ppl@8 (see the test above), not ppl@4's 2^1.5
    with pytest.raises(ValueError, match="training length 16"):
        LMModule(BigramStub(), OptimConfig(), total_steps=1, val_names=["ppl@4", "ppl@8"], train_length=16)


def test_lm_datamodule_evaluates_the_training_length_even_if_not_listed():
    from rope_lab.tasks.lm.datamodule import LMDataConfig, LMDataModule

    dm = LMDataModule(LMDataConfig(train_length=64, eval_lengths=[128, 256]), seed=0, total_steps=1)
    assert dm.val_names()[:3] == ["ppl@128", "ppl@256", "ppl@64"]


# ---------------------------------------------------------------------------------------------------------------
# V-NIAH: exact match of all answer tokens, per (length, depth) cell
# ---------------------------------------------------------------------------------------------------------------


class CountingStub(nn.Module):
    """Predicts next token = current token + 1 (mod 8) with certainty."""

    def __init__(self) -> None:
        super().__init__()
        self.pe = SimpleNamespace(name="stub")
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, tokens, positions, **_):
        return nn.functional.one_hot((tokens + 1) % 8, 8).float() * 10 + 0 * self.dummy


def _vniah_items(rows: list[list[int]], answer_tokens: int = 2) -> list[dict]:
    items = []
    for r in rows:
        n = len(r)
        mask = torch.zeros(n - 1, dtype=torch.bool)
        mask[-answer_tokens:] = True
        items.append({"tokens": torch.tensor(r), "coords": torch.zeros(n, 4),
                      "modality": torch.zeros(n, dtype=torch.long), "video": torch.zeros(1, 2, 2), "answer_mask": mask})
    return items


def test_vniah_answer_exact_match_needs_every_answer_token():
    from rope_lab.tasks.vniah.metrics import answer_exact_match, cell_name

    targets = torch.tensor([[4, 5, 6], [4, 5, 6], [4, 5, 6]])
    preds = torch.tensor([[0, 5, 6],   # answer (last two) right, prompt position wrong -> hit
                          [4, 5, 0],   # one of two answer tokens right -> miss
                          [4, 0, 0]])  # none right -> miss
    mask = torch.tensor([[False, True, True]] * 3)
    hit = answer_exact_match(nn.functional.one_hot(preds, 8).float(), targets, mask)
    assert hit.tolist() == [True, False, False]
    assert cell_name("vniah_d", 64, 0.5) == "vniah_d/acc/len=64/depth=0.5"
    assert cell_name("vniah", 128, 1.0) == "vniah/acc/len=128/depth=1"


def test_vniah_validation_logs_each_cell(tmp_path):
    from rope_lab.tasks.vniah.module import VNIAHModule

    module = VNIAHModule(CountingStub(), OptimConfig(), 1, "vniah_d", cells=[(8, 0.5), (16, 0.0)], fps=1.0)
    # answer = last 2 targets; the stub predicts input + 1
    cell_a = _vniah_items([
        [5, 0, 1, 2, 3],  # answer 2,3 from inputs 1,2 -> 2,3 hit (target 0 after 5 is wrong but not answer)
        [0, 1, 2, 3, 5],  # answer 3,5 predicted 3,4 -> miss (an "any" would count it)
        [0, 1, 2, 7, 7],  # answer 7,7 predicted 3,0 -> miss
    ])  # acc = 1/3
    cell_b = _vniah_items([
        [1, 2, 3, 4, 5],  # hit
        [1, 2, 3, 4, 4],  # answer 4,4 predicted 4,5 -> miss
    ])  # acc = 1/2
    m = _validate(module, [DataLoader(cell_a, batch_size=2), DataLoader(cell_b, batch_size=2)], tmp_path)
    assert {"vniah_d/acc/len=8/depth=0.5", "vniah_d/acc/len=16/depth=0", "vniah_d/acc"} == set(m)
    assert m["vniah_d/acc/len=8/depth=0.5"] == pytest.approx(1 / 3)
    assert m["vniah_d/acc/len=16/depth=0"] == pytest.approx(1 / 2)
    assert m["vniah_d/acc"] == pytest.approx((1 / 3 + 1 / 2) / 2)  # 5/12: mean over cells
    assert (tmp_path / "vniah_d_heatmap.png").exists()


def test_vniah_greedy_answer_is_classified_as_needle_distractor_other_or_invalid():
    from rope_lab.tasks.vniah.metrics import answer_outcomes, classify_answers, greedy_answer

    answers = ["Bag.", "Coat.", "Shirt."]
    script = {0: "Coat.", 1: "Bag.", 2: "Shirt.", 3: "Sh?rt"}  # what a scripted "model" writes per sample

    def logits_of(tokens):  # next-token logits of tokens[:, :-1]; writes its script one byte after the question
        b, n = tokens.shape
        logits = torch.full((b, n - 1, 256), -1.0)
        for i in range(b):
            text = script[i].encode()
            for j in range(n - 1):
                k = j + 1 - 3  # answer slots start at token 3
                # causal: follows its script only while the bytes before position j are the script's
                if 0 <= k < len(text) and tokens[i, 3:3 + k].tolist() == list(text[:k]):
                    logits[i, j, text[k]] = 1.0
        return logits

    tokens = torch.tensor([[7, 8, 9] + list(b"Bag.\0\0")] * 4)  # teacher-forcing layout with some answer in it
    decoded = greedy_answer(logits_of, tokens, start=3, length=6)
    chosen = classify_answers(decoded, answers)
    assert chosen == [1, 0, 2, -1]
    # needles: Coat, Coat, Bag, Bag; distractors: Shirt, Bag (sample 1 is misled), none, Shirt
    out = answer_outcomes(chosen, needle=[1, 1, 0, 0], distractor=[2, 0, -1, 2])
    assert out == {"correct": 0.25, "distractor": 0.25, "other": 0.25, "invalid": 0.25}


# ---------------------------------------------------------------------------------------------------------------
# Image classification: top-1 accuracy per resolution
# ---------------------------------------------------------------------------------------------------------------


class PixelLogitsStub(nn.Module):
    """Logits = the first 3 pixels of the first image row (the hand-made image carries its own prediction)."""

    patch_size, num_prefix_tokens = 4, 1

    def __init__(self) -> None:
        super().__init__()
        self.pe = SimpleNamespace(name="stub")
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, images, positions):
        return images[:, 0, 0, :3] + 0 * self.dummy


def _cls_items(res: int, rows: list[tuple[list[float], int]]) -> list[dict]:
    items = []
    for logits, label in rows:
        img = torch.zeros(1, res, res)
        img[0, 0, :3] = torch.tensor(logits)
        items.append({"images": img, "labels": label})
    return items


def test_image_accuracy_per_resolution(tmp_path):
    from rope_lab.tasks.image_cls.module import ImageClsModule

    aug = SimpleNamespace(label_smoothing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0)
    module = ImageClsModule(PixelLogitsStub(), OptimConfig(), 1, num_classes=3, resolutions=[8, 16],
                            train_resolution=8, aug=aug)
    # logits [ln2, 0, 0] -> p = [1/2, 1/4, 1/4]: CE = ln2 on the argmax class, ln4 = 2 ln2 on another
    h = LN2
    res8 = _cls_items(8, [([h, 0, 0], 0),   # right, CE ln2
                          ([0, h, 0], 1),   # right, CE ln2
                          ([0, 0, h], 0),   # wrong, CE 2 ln2
                          ([h, 0, 0], 0)])  # right, CE ln2
    # batches (3, 1): batch accuracies 2/3 and 1; micro accuracy over images = 3/4 (mean of batches = 5/6)
    # loss = (ln2 + ln2 + 2ln2 + ln2) / 4 = 1.25 ln2
    res16 = _cls_items(16, [([0, h, 0], 2),   # wrong, CE 2 ln2
                            ([0, 0, h], 2)])  # right, CE ln2   -> acc 1/2, loss 1.5 ln2
    m = _validate(module, [DataLoader(res8, batch_size=3), DataLoader(res16, batch_size=2)], tmp_path)
    assert {"val/acc@res=8", "val/acc@res=16", "val/loss@res=8", "val/loss@res=16", "val/acc"} == set(m)
    assert m["val/acc@res=8"] == pytest.approx(0.75)
    assert m["val/acc@res=16"] == pytest.approx(0.5)
    assert m["val/acc"] == pytest.approx(0.75)  # training resolution 8
    assert m["val/loss@res=8"] == pytest.approx(1.25 * LN2, rel=1e-5)
    assert m["val/loss@res=16"] == pytest.approx(1.5 * LN2, rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Trajectory: minADE / minFDE / miss rate
# ---------------------------------------------------------------------------------------------------------------


def test_min_ade_fde_and_miss_rate_by_hand():
    from rope_lab.tasks.trajectory.metrics import horizon_metrics, min_ade_fde, miss

    # one agent, ground truth along x: (1,0), (2,0), (3,0), (4,0)
    gt = torch.tensor([[[1.0, 0], [2, 0], [3, 0], [4, 0]]])
    # mode 0: 3 m to the side at every step -> errors 3,3,3,3: ADE(4) = 3, FDE(4) = 3
    # mode 1: exact for 3 steps, then 8 m off -> errors 0,0,0,8: ADE(4) = 2, FDE(4) = 8; ADE(2) = 0, FDE(2) = 0
    mode0 = gt[0] + torch.tensor([0.0, 3.0])
    mode1 = gt[0].clone()
    mode1[3] = torch.tensor([4.0, 8.0])
    pred = torch.stack([mode0, mode1])[None]  # (A=1, K=2, T=4, 2)
    ade, fde = min_ade_fde(pred, gt, 4)
    # minADE and minFDE pick their best mode independently: min(3, 2) = 2 and min(3, 8) = 3
    assert ade.tolist() == [pytest.approx(2.0)] and fde.tolist() == [pytest.approx(3.0)]
    ade2, fde2 = min_ade_fde(pred, gt, 2)  # horizon 2 steps: mode 1 exact
    assert ade2.tolist() == [0.0] and fde2.tolist() == [0.0]
    # a second agent, one mode, 3-4-5 triangle at the last step: errors 0,0,0,5 -> ADE 1.25, FDE 5
    gt_b = gt.clone()
    pred_b = gt_b.clone()
    pred_b[0, 3] += torch.tensor([3.0, 4.0])
    pred_b = torch.cat([pred_b[:, None], pred_b[:, None]], dim=1)  # K=2 identical modes
    preds, gts = torch.cat([pred, pred_b]), torch.cat([gt, gt_b])
    cv = gts[:, None].clone()  # a perfect constant-velocity floor: 0 everywhere
    cv[0, 0, 3, 0] += 6.0  # except agent 0's last point 6 m ahead -> cv ADE 1.5, FDE 6
    v = horizon_metrics(preds, cv, gts, steps=4, threshold=4.0)
    torch.testing.assert_close(v["minADE"], torch.tensor([2.0, 1.25]))
    torch.testing.assert_close(v["minFDE"], torch.tensor([3.0, 5.0]))
    # miss: minFDE > 4 m -> agent 0 (3 m) no, agent 1 (5 m) yes -> miss rate 1/2
    torch.testing.assert_close(v["miss_rate"], torch.tensor([0.0, 1.0]))
    assert float(v["miss_rate"].mean()) == 0.5
    torch.testing.assert_close(v["cv_minADE"], torch.tensor([1.5, 0.0]))
    torch.testing.assert_close(v["cv_minFDE"], torch.tensor([6.0, 0.0]))
    assert miss(torch.tensor([4.0, 4.0001]), 4.0).tolist() == [0.0, 1.0]  # exactly at the threshold is a hit


# ---------------------------------------------------------------------------------------------------------------
# Image generation: classifier accuracy, FID, KID; PSNR
# ---------------------------------------------------------------------------------------------------------------


class FeatureStub(nn.Module):
    """A 'classifier' whose 64-d features are the 8x8 image itself and whose logits are the first 10 pixels."""

    def features(self, images):
        return images.flatten(1).double()

    def forward(self, images):
        return images.flatten(1)[:, :10]


def _points(*xy: tuple[float, float]) -> torch.Tensor:
    """Images (N, 1, 8, 8) whose features are (x, y, 0, ..., 0)."""
    out = torch.zeros(len(xy), 64)
    out[:, :2] = torch.tensor(xy)
    return out.reshape(-1, 1, 8, 8)


def test_fid_by_hand():
    from rope_lab.tasks.image_gen.metrics import GenerationScores

    # real features: the square (+-1, +-1): mean 0, unbiased covariance diag(4/3, 4/3) (sum of squares 4 / (4-1))
    real = _points((1, 1), (1, -1), (-1, 1), (-1, -1))
    labels = torch.zeros(2, dtype=torch.long)
    scores = GenerationScores(FeatureStub(), real)
    # fake = real shifted by (3, 4): same covariance -> FID = |(3, 4)|^2 + 0 = 25
    fake = real + _points((3, 4))
    scores.update(fake[:2], labels)
    scores.update(fake[2:], labels)  # accumulated over two batches
    out = scores.compute()
    assert float(out["fid"]) == pytest.approx(25.0, abs=1e-3)
    assert "kid" not in out  # 4 images < the KID subset (50)
    scores.reset()
    # fake = 2 x real: same mean, covariance 4 S -> FID = tr S + tr 4S - 2 tr sqrt(4 S^2) = tr S = 8/3
    # (a biased (1/N) covariance would give 2)
    scores.update(2 * real, torch.zeros(4, dtype=torch.long))
    assert float(scores.compute()["fid"]) == pytest.approx(8 / 3, abs=1e-3)


def test_kid_by_hand():
    from rope_lab.tasks.image_gen.metrics import GenerationScores

    # polynomial kernel k(a, b) = (a.b / 64 + 1)^3 on 64-d features, subset size 2 = every image (subsets agree)
    # real x1 = 8 e0, x2 = 0;  fake y1 = y2 = -8 e0
    # k(x1,x2) = 1 -> unbiased xx term = (1 + 1) / (2*1) = 1
    # k(y1,y2) = (64/64 + 1)^3 = 8 -> yy term = (8 + 8) / 2 = 8
    # k(x1,y) = (-1 + 1)^3 = 0, k(x2,y) = 1 -> xy term = 2 * (0+0+1+1) / 4 = 1
    # KID = 1 + 8 - 1 = 8   (with diagonals included it would be 11/4 + 8 - 1 = 9.75)
    real = _points((8, 0), (0, 0))
    scores = GenerationScores(FeatureStub(), real, kid_subset=2)
    scores.update(_points((-8, 0), (-8, 0)), torch.zeros(2, dtype=torch.long))
    out = scores.compute()
    assert float(out["kid"]) == pytest.approx(8.0, rel=1e-6)


def test_generation_accuracy_by_hand():
    from rope_lab.tasks.image_gen.metrics import GenerationScores

    scores = GenerationScores(FeatureStub(), _points((1, 0), (0, 1)))
    imgs = torch.zeros(5, 64)
    for i, c in enumerate([3, 7, 7, 0, 9]):  # argmax of the logits (first 10 pixels)
        imgs[i, c] = 1.0
    labels = torch.tensor([3, 7, 1, 0, 2])  # right, right, wrong, right, wrong -> 3/5
    scores.update(imgs[:3].reshape(-1, 1, 8, 8), labels[:3])
    scores.update(imgs[3:].reshape(-1, 1, 8, 8), labels[3:])
    assert float(scores.compute()["acc"]) == pytest.approx(0.6)


def test_psnr_by_hand():
    from rope_lab.analysis.rope_probing import psnr

    ref = torch.zeros(2, 1, 2, 2)
    img = ref.clone()
    img[0, 0, 0, 0] = 10 / 255  # image 0: one of 4 pixels off by 10 levels -> MSE 100/4 = 25 -> 20 log10(255/5)
    img[0, 0, 1, 1] = 0.4 / 255  # quantised to 0: no error
    img[1] = 20 / 255  # image 1: every pixel off by 20 -> MSE 400 -> 20 log10(255/20)
    out = psnr(ref, img)
    assert out.tolist() == [pytest.approx(20 * math.log10(51)), pytest.approx(20 * math.log10(12.75))]


# ---------------------------------------------------------------------------------------------------------------
# Control generation: frame accuracy of the extracted melody
# ---------------------------------------------------------------------------------------------------------------


def test_melody_and_frame_accuracy_by_hand():
    from rope_lab.tasks.control_gen.control import frame_accuracy, melody

    # H = 4 rows, W = 4 frames, bins = 2 (rows 0-1 -> band 0, rows 2-3 -> band 1), silent class = 2
    img = torch.zeros(1, 1, 4, 4)
    img[0, 0, 0, 0] = 1.0  # frame 0: centroid row 0 -> band floor(0 * 2/4) = 0
    img[0, 0, 3, 1] = 1.0  # frame 1: centroid row 3 -> band floor(3 * 2/4) = 1
    img[0, 0, 1, 2] = img[0, 0, 2, 2] = 0.5  # frame 2: centroid 1.5 -> floor(0.75) = 0
    img[0, 0, 3, 3] = 0.1  # frame 3: mean intensity 0.1/4 = 0.025 < silence 0.05 -> silent (2)
    assert melody(img, bins=2).tolist() == [[0, 1, 0, 2]]
    target = torch.tensor([[0, 1, 0, 2], [0, 0, 1, 2]])
    gen = torch.cat([img, img])
    # sample 0 matches all 4 frames; sample 1 matches frames 0 and 3 -> [1, 1/2]
    torch.testing.assert_close(frame_accuracy(gen, target, bins=2), torch.tensor([1.0, 0.5]))


def test_control_baselines_by_hand():
    """Class-average image, per-position constant and noise baselines of control_gen (issue 20)."""
    import numpy as np

    from rope_lab.tasks.control_gen.control import ControlBaselines

    # 2 classes, 4x4 images, bins = 2. Class 0: a bright top row (band 0 everywhere); class 1: bottom row (band 1),
    # one of the three class-1 images is dark in frame 3 (silent there).
    top = np.zeros((4, 4), np.uint8)
    top[0] = 255
    bottom = np.zeros((4, 4), np.uint8)
    bottom[3] = 255
    bottom_gap = bottom.copy()
    bottom_gap[3, 3] = 0
    images = np.stack([top, bottom, bottom, bottom_gap])
    labels = np.array([0, 1, 1, 1])
    b = ControlBaselines.from_training_set(images, labels, num_classes=2, bins=2)
    torch.testing.assert_close(b.class_mean[0, 0], torch.from_numpy(top / 255.0).float())
    torch.testing.assert_close(b.class_mean[1, 0, 3], torch.tensor([1.0, 1.0, 1.0, 2 / 3]))
    # frame labels: top [0,0,0,0]; bottom [1,1,1,1] twice; bottom_gap [1,1,1,2]: mode per position = [1,1,1,1]
    assert b.constant.tolist() == [1, 1, 1, 1]
    target = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 2]])
    noise = torch.full((2, 1, 4, 4), -5.0)  # reads as a black image: every frame silent (2)
    acc = b.accuracies(torch.tensor([0, 1]), target, noise, bins=2)
    # class mean of class 0 = the top image -> all 4 frames right; of class 1: frame 3 has mass (2/3)/4 = 0.17 >
    # silence, centroid row 3 -> band 1, target 2 -> 3 of 4
    torch.testing.assert_close(acc["class_mean"], torch.tensor([1.0, 0.75]))
    torch.testing.assert_close(acc["constant"], torch.tensor([0.0, 0.75]))
    torch.testing.assert_close(acc["noise"], torch.tensor([0.0, 0.25]))
