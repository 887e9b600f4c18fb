"""The release's stop rule, learning-rate schedule and ties during the search (issue 18, item 2; tiny, fast)."""

import dataclasses
import sys

import pytest
import torch

from nslab import config
from nslab.data import synthetic_data
from nslab.models import uniform_widths
from nslab.runs.loop import Step
from nslab.search.prune import Pruner, PruneSettings, prune, search_lr

WIDTHS = [3, 8, 8, 8, 8, 8, 8, 8]  # VGG11 with a 3-channel first layer
# One prune step per call of on_step, no training needed: the criteria below ignore the network.
_UNIT = PruneSettings(channels_per_step=2, batches_per_step=1, shrink=False, stop_fraction=0.2)


@pytest.fixture(scope="module")
def data():
    return synthetic_data(train_per_class=16, test_per_class=2)


def _step() -> Step:
    return Step(epoch=1, index=0, loss=torch.tensor(1.0), model=None, optimizer=None)


def _scores(first: list[float], rest: float, widths: list[int]) -> list[torch.Tensor]:
    return [torch.tensor(first)] + [torch.full((w,), rest) for w in widths[1:]]


class _Layer0LowestOnce:
    """Layer 0 ranks lowest at the first call, highest after it (so the rank rule never picks its last channel)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model):
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)] if model is not None else None
        widths = [bn.num_features for bn in bns] if bns else WIDTHS
        self.calls += 1
        low = 0.0 if self.calls == 1 else 5.0
        return [torch.full((w,), low if i == 0 else 1.0 + 0.01 * i) for i, w in enumerate(widths)]


# --- (a) stop rule --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stop_rule", ["rank", "release"])
def test_release_stop_rule_stops_at_the_first_step_after_a_layer_is_down_to_one(stop_rule):
    s = dataclasses.replace(_UNIT, stop_when_layer_empties=True, stop_rule=stop_rule)
    pruner = Pruner("vgg11", WIDTHS, s, criterion=_Layer0LowestOnce())
    assert pruner.on_step(_step())  # step 1: two of layer 0's three channels go
    assert pruner.widths()[0] == 1 and pruner.steps == 1
    st = _step()
    removed = pruner.on_step(st)  # step 2: layer 0's last channel now ranks highest
    if stop_rule == "release":
        assert not removed and st.stop and pruner.stop_reason == "layer_empties" and pruner.steps == 1
    else:  # nslab's rule keeps pruning the other layers
        assert removed and not st.stop and pruner.stop_reason is None and pruner.steps == 2
        assert pruner.widths()[0] == 1 and sum(pruner.widths()) == sum(WIDTHS) - 4


def test_prune_with_the_release_stop_rule_ends_after_the_first_step(data):
    s = PruneSettings(channels_per_step=2, batches_per_step=1, batch_size=16, pretrain_epochs=0, lr=0.05,
                      stop_fraction=0.5)  # (the layers that tie at 1.0 would empty one by one with the empties stop)
    rank = prune("vgg11", data, s, widths=WIDTHS, criterion=_Layer0LowestOnce(), progress=False)
    release = prune("vgg11", data, dataclasses.replace(s, stop_rule="release"), widths=WIDTHS,
                    criterion=_Layer0LowestOnce(), progress=False)
    assert rank.stop_reason == "fraction" and rank.steps > 1
    assert release.stop_reason == "layer_empties" and release.steps == 1
    assert release.final_widths == [1] + WIDTHS[1:]


# --- (b) learning-rate schedule -------------------------------------------------------------------------


def test_release_lr_schedule_epoch_by_epoch():
    paper = config.preset("paper").search.prune
    assert paper.lr_schedule == "release" and paper.pretrain_epochs == 10
    got = {e: search_lr(paper, e) for e in range(1, 41)}
    for e in range(1, 10):  # pre-training epochs 1..9
        assert got[e] == 0.1
    assert got[10] == 0.01  # the last pre-training epoch
    for e in range(11, 20):  # pruning from epoch 11
        assert got[e] == 0.01
    for e in range(20, 30):
        assert got[e] == pytest.approx(0.01 / 1.5, rel=1e-15)
    for e in range(30, 40):
        assert got[e] == pytest.approx(0.01 / 1.5 ** 2, rel=1e-15)
    assert got[40] == pytest.approx(0.01 / 1.5 ** 3, rel=1e-15)
    # nslab's schedule (the default, smoke/cpu/gpu): all ten pre-training epochs at 0.1, decays one epoch later
    d = PruneSettings()
    assert [search_lr(d, e) for e in (1, 10, 11, 20)] == [0.1, 0.1, 0.01, 0.01]
    assert search_lr(d, 21) == pytest.approx(0.01 / 1.5, rel=1e-15)
    # P = 0: the release's switch to lr (at epoch P) never fires; its decays start from pretrain_lr
    p0 = dataclasses.replace(paper, pretrain_epochs=0)
    assert [search_lr(p0, e) for e in (1, 9)] == [0.1, 0.1] and search_lr(p0, 10) == pytest.approx(0.1 / 1.5)
    with pytest.raises(ValueError, match="pretrain_schedule"):
        PruneSettings(lr_schedule="release", pretrain_schedule="linear")


@pytest.mark.parametrize("schedule", ["nslab", "release"])
def test_prune_trains_each_epoch_at_the_schedules_lr(data, monkeypatch, schedule):
    mod = sys.modules["nslab.search.prune"]
    seen: dict[int, float] = {}
    real = mod.train_one_epoch

    def recording(model, batches, opt, lr_schedule, *a, **kw):
        seen[kw["epoch"]] = lr_schedule(0)
        return real(model, batches, opt, lr_schedule, *a, **kw)

    monkeypatch.setattr(mod, "train_one_epoch", recording)
    s = PruneSettings(channels_per_step=8, batches_per_step=1, batch_size=32, pretrain_epochs=2, pretrain_lr=0.1,
                      lr=0.01, lr_decay_every=2, lr_schedule=schedule)
    mod.prune("vgg11", data, s, widths=uniform_widths("vgg11", 0.125), seed=0, progress=False)
    assert len(seen) >= 6
    if schedule == "release":  # epoch 2 (the last pre-training one) at 0.01, decays at epochs 4, 6, ...
        want = {1: 0.1, 2: 0.01, 3: 0.01, 4: 0.01 / 1.5, 5: 0.01 / 1.5, 6: 0.01 / 1.5 ** 2}
    else:
        want = {1: 0.1, 2: 0.1, 3: 0.01, 4: 0.01, 5: 0.01 / 1.5, 6: 0.01 / 1.5}
    assert {e: seen[e] for e in want} == pytest.approx(want, rel=1e-12)
    assert all(seen[e] == search_lr(s, e) for e in seen)


# --- (c) ties -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ties, removed", [("exact_k", 2), ("at_or_below", 5)])
def test_a_step_removes_every_channel_at_or_below_the_threshold_only_with_release_ties(ties, removed):
    # five channels of layer 1 score 0 (dead), the rest distinct and higher: the 2nd lowest score is 0
    scores = [torch.arange(1.0, 4.0)] + [torch.tensor([0.0] * 5 + [7.0, 8.0, 9.0])] + [
        torch.arange(10.0, 18.0) + 10 * i for i in range(6)]
    s = dataclasses.replace(_UNIT, prune_ties=ties)
    pruner = Pruner("vgg11", WIDTHS, s, criterion=lambda m: scores)
    assert pruner.on_step(_step())
    assert pruner.widths() == [3, 8 - removed] + WIDTHS[2:]
    assert pruner.alive[1][:removed].logical_not().all() and pruner.alive[1][removed:].all()


def test_release_ties_cut_a_constant_criterion_to_one_channel_per_layer_but_exact_k_takes_k():
    const = lambda m: [torch.ones(w) for w in WIDTHS]  # noqa: E731
    exact = Pruner("vgg11", WIDTHS, _UNIT, criterion=const)
    assert exact.on_step(_step()) and sum(exact.widths()) == sum(WIDTHS) - 2
    tied = Pruner("vgg11", WIDTHS, dataclasses.replace(_UNIT, prune_ties="at_or_below"), criterion=const)
    assert tied.on_step(_step()) and tied.widths() == [1] * len(WIDTHS)  # every tie goes; no layer empties


def test_the_paper_preset_sets_the_release_values_and_the_others_keep_the_defaults():
    for name in ("smoke", "cpu", "gpu"):
        pr = config.preset(name).search.prune
        assert (pr.stop_rule, pr.lr_schedule, pr.prune_ties) == ("rank", "nslab", "exact_k")
        r = config.resolve(pr)
        assert not {"stop_rule", "lr_schedule", "prune_ties"} & set(r)  # cache keys unchanged
    r = config.resolve(config.preset("paper").search.prune)
    assert (r["stop_rule"], r["lr_schedule"], r["prune_ties"]) == ("release", "release", "at_or_below")
