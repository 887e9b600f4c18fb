"""Baselines with their own runs: MorphNet (Taylor-FO) and Li et al. (tiny synthetic runs)."""

import dataclasses

import pytest
import torch

import nslab.scaling.baselines as baselines
from nslab import io
from nslab.config import BaselineSettings, PruneSettings, SearchSettings, preset, scale_epochs
from nslab.data import synthetic_data
from nslab.models import create_model, param_count, uniform_widths
from nslab.runs.specs import recipe
from nslab.scaling.baselines import li_baseline, morphnet_baseline, transplant
from nslab.scaling.methods import Context
from nslab.search.prune import apply_masks, shrink_model

TINY = SearchSettings(
    PruneSettings(channels_per_step=8, batches_per_step=1, batch_size=16, pretrain_epochs=0, lr=0.05),
    iterations=1,
    synthetic=True,
    start_ratio=0.0625,
)
LI = BaselineSettings(li_finetune_epochs=1, li_finetune_lr=0.01)


@pytest.fixture(scope="module")
def data():
    return synthetic_data(train_per_class=16, test_per_class=4)


def test_transplant_is_exact_filter_removal_for_vgg():
    torch.manual_seed(0)
    widths = [6, 8, 8, 10, 10, 12, 12, 12]
    model = create_model("vgg11", widths).eval()
    keep = {i: torch.arange(0, w, 2) for i, w in enumerate(widths)}
    new_widths = [len(k) for k in keep.values()]
    a = transplant(model, "vgg11", keep, new_widths).eval()
    b, _, _ = shrink_model(model, "vgg11", widths, keep)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
        masks = {i: torch.zeros(w).index_fill_(0, keep[i], 1.0) for i, w in enumerate(widths)}
        apply_masks(model, masks)
        torch.testing.assert_close(a(x), model(x), rtol=1e-5, atol=1e-5)


def test_morphnet_prunes_to_half_then_scales_and_reuses_its_output(tmp_path, data, monkeypatch):
    ratios = [0.5, 1.0]
    res = morphnet_baseline("vgg11", "cifar10", data, TINY, ratios=ratios, out_dir=tmp_path, progress=False)
    start = uniform_widths("vgg11", TINY.start_ratio)
    assert sum(res.base_widths) == sum(start) - int(0.5 * sum(start)) == 86
    ctx = Context("vgg11", "cifar10", start_ratio=TINY.start_ratio)
    for r in ratios:
        target = ctx.budget(r).target
        assert abs(param_count("vgg11", res.configs[r]) - target) / target < 0.03
    saved = io.read_json(tmp_path / "morphnet.json")
    assert saved["base_widths"] == res.base_widths

    def boom(*args, **kwargs):
        raise AssertionError("must not prune again")

    monkeypatch.setattr(baselines, "prune", boom)
    again = morphnet_baseline("vgg11", "cifar10", data, TINY, ratios=ratios, out_dir=tmp_path)
    assert again.base_widths == res.base_widths


def test_li_baseline_prunes_trained_network_to_budget(tmp_path, data):
    target = Context("vgg11", "cifar10", start_ratio=TINY.start_ratio).budget(LI.li_ratio).target
    r = scale_epochs(recipe("smoke", "cifar10"), 1)
    res = li_baseline("vgg11", "cifar10", data, r, LI, target, TINY.start_ratio, tmp_path, device="cpu",
                      progress=False)
    assert res.target == target
    assert abs(res.params - target) / target < 0.02
    assert sum(p.numel() for p in res.model.parameters()) == res.params == param_count("vgg11", res.widths)
    assert len(res.train_history) == 1 and len(res.finetune_history) == 1
    assert (tmp_path / "model.pt").exists()
    assert io.read_json(tmp_path / "li.json")["widths"] == res.widths
    blob = torch.load(tmp_path / "model.pt")
    m = create_model("vgg11", blob["widths"])
    m.load_state_dict(blob["state_dict"])


def test_baseline_settings_of_the_paper():
    p = preset("paper").baseline
    assert (p.li_ratio, p.li_finetune_epochs, p.li_finetune_lr, p.morphnet_keep) == (0.75, 40, 0.001, 0.5)
    assert dataclasses.replace(p, li_ratio=0.5).li_ratio == 0.5
