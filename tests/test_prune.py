"""Algorithm 1: Taylor-FO importance, physical shrinking and the iterative pruner (tiny, synthetic)."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nslab.data import synthetic_data
from nslab.models import ARCHS, create_model, default_widths, param_count, uniform_widths
from nslab.search.prune import (
    BNScale,
    L1Norm,
    PruneSettings,
    TaylorFO,
    apply_masks,
    channel_map,
    gate_gradients,
    prune,
    shrink_model,
    shrinkable_layers,
)

TINY = {
    "vgg11": [6, 8, 8, 10, 10, 12, 12, 12],
    "resnet18": [6] * 5 + [8] * 4 + [8] * 4 + [10] * 4,
    "mobilenetv2": [6, 4, 6, 6, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 10, 24],
}
FAST = PruneSettings(channels_per_step=4, batches_per_step=1, batch_size=16, pretrain_epochs=0, lr=0.05)


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = torch.argsort(torch.argsort(a)).double()
    rb = torch.argsort(torch.argsort(b)).double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def _randomise_bn(model: torch.nn.Module, gen: torch.Generator) -> None:
    # Non-trivial running statistics, so eval-mode outputs depend on every BN parameter and buffer.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


@pytest.fixture(scope="module")
def data():
    return synthetic_data(train_per_class=16, test_per_class=2)


# --- Taylor-FO ------------------------------------------------------------------------------------------


def _tiny_double_vgg(data, n=32):
    torch.manual_seed(0)
    model = create_model("vgg11", TINY["vgg11"]).double()
    _randomise_bn(model, torch.Generator().manual_seed(1))
    model.eval()
    x = (data.train_x[:n].double() - 128) / 64
    return model, x, data.train_y[:n]


def _loss_with_gate(model, x, y, i, gate):
    h = apply_masks(model, {i: gate})
    try:
        with torch.no_grad():
            return float(F.cross_entropy(model(x), y))
    finally:
        h.remove()


def test_gate_gradient_equals_finite_difference_of_the_gate(data):
    model, x, y = _tiny_double_vgg(data)
    grads = gate_gradients(model, x, y)
    eps = 1e-6  # small: ReLU and max-pool kinks make larger steps second-order inexact
    for i in (0, 3, 7):
        fd = []
        for c in range(len(grads[i])):
            up, down = (
                torch.ones(len(grads[i]), dtype=torch.float64),
                torch.ones(len(grads[i]), dtype=torch.float64),
            )
            up[c], down[c] = 1 + eps, 1 - eps
            fd.append(
                (_loss_with_gate(model, x, y, i, up) - _loss_with_gate(model, x, y, i, down)) / (2 * eps)
            )
        torch.testing.assert_close(grads[i], torch.tensor(fd, dtype=torch.float64), rtol=1e-5, atol=1e-8)


def test_taylor_estimate_ranks_the_loss_change_from_removing_channels(data):
    model, x, y = _tiny_double_vgg(data)
    grads = gate_gradients(model, x, y)  # signed dL/dg per gate channel
    with torch.no_grad():
        base = float(F.cross_entropy(model(x), y))
    first_order, exact = [], []
    for i, g in enumerate(grads):
        for c in range(len(g)):
            gate = torch.ones(len(g), dtype=torch.float64)
            gate[c] = 0
            exact.append(_loss_with_gate(model, x, y, i, gate) - base)  # L(g_c = 0) - L(g_c = 1)
            first_order.append(-float(g[c]))  # Taylor: L(0) ~ L(1) - dL/dg
    fo, ex = torch.tensor(first_order), torch.tensor(exact)
    # Removing one of 6-12 channels is no small step, so the first-order estimate ranks, not equals.
    assert _spearman(fo, ex) > 0.7
    # The importance (g * dL/dg)^2 orders channels by the size of the actual loss change.
    assert _spearman(fo**2, ex.abs()) > 0.7
    # The sign agrees wherever removing the channel matters (the largest quarter of |change|).
    big = ex.abs() >= ex.abs().quantile(0.75)
    assert (torch.sign(fo[big]) == torch.sign(ex[big])).float().mean() >= 0.85


def test_taylor_scores_average_squared_minibatch_gradients(data):
    torch.manual_seed(0)
    model = create_model("vgg11", TINY["vgg11"])
    x = (data.train_x[:32].float() - 128) / 64
    y = data.train_y[:32]
    g1 = gate_gradients(model, x[:16], y[:16])
    g2 = gate_gradients(model, x[16:], y[16:])
    crit = TaylorFO().attach(model)
    for sl in (slice(0, 16), slice(16, 32)):
        model.zero_grad()
        F.cross_entropy(model(x[sl]), y[sl]).backward()
    scores = crit(model)
    for s, a, b in zip(scores, g1, g2):
        torch.testing.assert_close(s, (a**2 + b**2) / 2, rtol=1e-4, atol=1e-12)
    crit.reset()
    with pytest.raises(ValueError, match="no scores"):
        crit(model)
    crit.detach()


def test_weight_criteria_score_each_channel():
    torch.manual_seed(0)
    model = create_model("vgg11", TINY["vgg11"])
    l1 = L1Norm("vgg11")(model)
    bn = BNScale("vgg11")(model)
    conv = model.features[0]
    torch.testing.assert_close(l1[0], conv.weight.detach().abs().sum(dim=(1, 2, 3)).double())
    assert [len(s) for s in l1] == TINY["vgg11"] == [len(s) for s in bn]
    torch.testing.assert_close(bn[0], model.features[1].weight.detach().abs().double())


# --- shrinking ------------------------------------------------------------------------------------------


def tiny_widths(arch: str) -> list[int]:
    """The small widths above for the paper's networks; an eighth of the defaults (at least 4) for others."""
    return TINY.get(arch) or [max(4, w // 8) for w in default_widths(arch)]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_shrinking_preserves_outputs_params_and_momentum(arch):
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    widths = tiny_widths(arch)
    model = create_model(arch, widths)
    _randomise_bn(model, gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(4, 3, 32, 32, generator=gen)
    F.cross_entropy(model(x), torch.arange(4)).backward()
    opt.step()  # momentum buffers exist now
    keep, masks = {}, {}
    for i in shrinkable_layers(arch):
        idx = torch.sort(torch.randperm(widths[i], generator=gen)[: max(1, widths[i] // 2)]).values
        keep[i] = idx
        masks[i] = torch.zeros(widths[i]).index_fill_(0, idx, 1.0)
    model.eval()
    h = apply_masks(model, masks)
    with torch.no_grad():
        before = model(x)
    h.remove()
    with torch.no_grad():
        unmasked = model(x)
    new, new_widths, new_opt = shrink_model(model, arch, widths, keep, optimizer=opt)
    with torch.no_grad():
        after = new(x)
    assert not torch.allclose(unmasked, before)  # the mask does something...
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)  # ...and shrinking computes the same
    assert new_widths == [len(keep[i]) if i in keep else w for i, w in enumerate(widths)]
    assert sum(p.numel() for p in new.parameters()) == param_count(arch, new_widths)
    # Momentum carried: every output-channel-indexed buffer keeps exactly the rows of the kept channels.
    old_params, new_params = dict(model.named_parameters()), dict(new.named_parameters())
    checked = 0
    for i, idx in keep.items():
        for key, dim in channel_map(arch)[i]:
            if dim == 0 and key in new_params and new_params[key].shape[1:] == old_params[key].shape[1:]:
                old_buf = opt.state[old_params[key]]["momentum_buffer"]
                new_buf = new_opt.state[new_params[key]]["momentum_buffer"]
                torch.testing.assert_close(new_buf, old_buf.index_select(0, idx))
                checked += 1
    assert checked > 0
    assert len(new_opt.state) == len(opt.state)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_shrunk_optimiser_state_keeps_the_channels_last_layout(arch):
    # index_select returns NCHW tensors: a momentum buffer of a channels-last weight must be put back.
    torch.manual_seed(0)
    widths = tiny_widths(arch)
    model = create_model(arch, widths).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    F.cross_entropy(model(x), torch.arange(2)).backward()
    opt.step()
    keep = {i: torch.arange(0, widths[i], 2) for i in shrinkable_layers(arch)}
    new, _, new_opt = shrink_model(model, arch, widths, keep, optimizer=opt)
    bufs = [new_opt.state[p]["momentum_buffer"] for p in new.parameters() if p.dim() == 4]
    assert bufs and all(p.is_contiguous(memory_format=torch.channels_last) for p in new.parameters() if p.dim() == 4)
    assert all(b.is_contiguous(memory_format=torch.channels_last) for b in bufs)


def test_shrink_rejects_entries_that_must_be_masked():
    model = create_model("resnet18", TINY["resnet18"])
    with pytest.raises(ValueError, match="cannot be removed exactly"):
        shrink_model(model, "resnet18", TINY["resnet18"], {0: torch.arange(3)})


# --- the pruner -----------------------------------------------------------------------------------------


def test_pruner_records_exact_strictly_decreasing_rows(data):
    widths = TINY["vgg11"]
    s = dataclasses.replace(FAST, stop_fraction=0.2)  # 16 of 78 channels left: every layer can still lose one
    seen = []  # what a live plot receives: the whole trajectory so far, after every row
    res = prune("vgg11", data, s, widths=widths, seed=1, progress=False,
                on_row=lambda w, p: seen.append((w.copy(), p.copy())))
    w, p = res.widths, res.params
    assert len(w) >= 6
    assert [len(sw) for sw, _ in seen] == list(range(1, len(w) + 1))
    np.testing.assert_array_equal(seen[-1][0], w)
    np.testing.assert_array_equal(seen[-1][1], p)
    assert (np.diff(p) < 0).all()
    assert p.tolist() == [param_count("vgg11", row) for row in w.tolist()]
    assert (w < np.asarray(widths)).all()  # recording starts once every layer lost a channel
    assert (w >= 1).all()
    assert sum(res.final_widths) == s.target_channels(sum(widths)) == 16
    # With shrinking, the returned VGG11 is physically the final width vector.
    assert sum(q.numel() for q in res.model.parameters()) == param_count("vgg11", res.final_widths)


def test_the_half_point_is_kept_exactly_as_a_run_stopping_there_ends(data):
    # MorphNet's network: the start network with exactly N - int(0.5 N) channels left, layers never pruned at
    # their start width (the release's bases), not the first recorded row at or below half (recording starts
    # once every layer lost a channel, and 4-channel steps from 78 never land on 39).
    widths = [6, 8, 8, 10, 10, 12, 12, 40]  # a wide last layer keeps some channels of the others whole
    n = sum(widths)
    search = prune("vgg11", data, dataclasses.replace(FAST, stop_fraction=0.2), widths=widths, seed=1, progress=False)
    alone = prune("vgg11", data, dataclasses.replace(FAST, stop_fraction=0.5), widths=widths, seed=1, progress=False)
    assert sum(search.at_half) == n - int(0.5 * n) == sum(alone.final_widths)
    assert search.at_half == alone.final_widths  # the same network a MorphNet run stopping at half reaches
    assert alone.at_half == alone.final_widths
    assert all(1 <= w <= w0 for w, w0 in zip(search.at_half, widths))
    assert search.at_half not in search.widths.tolist()


@pytest.mark.parametrize("arch", ["resnet18", "mobilenetv2"])
def test_pruner_rows_exact_for_residual_archs(arch, data):
    s = dataclasses.replace(FAST, channels_per_step=8, stop_fraction=0.2)
    res = prune(arch, data, s, widths=TINY[arch], seed=0, progress=False)
    assert len(res.widths) >= 2
    assert res.params.tolist() == [param_count(arch, row) for row in res.widths.tolist()]
    assert (np.diff(res.widths.sum(axis=1)) < 0).all()
    assert sum(res.final_widths) == s.target_channels(sum(TINY[arch]))


def test_shrinking_and_masking_prune_the_same_way(data):
    s = dataclasses.replace(FAST, stop_fraction=0.5)
    a = prune("vgg11", data, s, widths=TINY["vgg11"], seed=2, progress=False)
    b = prune(
        "vgg11", data, dataclasses.replace(s, shrink=False), widths=TINY["vgg11"], seed=2, progress=False
    )
    assert not b.masks == {}  # the masked run really masked
    np.testing.assert_allclose(a.losses[:4], b.losses[:4], rtol=1e-3)
    np.testing.assert_array_equal(a.widths[:2], b.widths[:2])


def _layer0_lowest(model):
    # A plug-in criterion: layer 0 always ranks lowest, everything else ties at 1 (VGG11: one BN per gate).
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    return [
        torch.zeros(bn.num_features) if i == 0 else torch.ones(bn.num_features) for i, bn in enumerate(bns)
    ]


def test_layer_never_empties_unless_the_released_rule_is_asked_for(data):
    widths = [3, 8, 8, 8, 8, 8, 8, 8]
    s = dataclasses.replace(FAST, channels_per_step=2, stop_fraction=0.5)
    res = prune("vgg11", data, s, widths=widths, criterion=_layer0_lowest, progress=False)
    assert res.final_widths[0] == 1 and min(res.final_widths) >= 1
    assert res.stop_reason == "fraction"
    res2 = prune(
        "vgg11",
        data,
        dataclasses.replace(s, stop_when_layer_empties=True),
        widths=widths,
        criterion=_layer0_lowest,
        progress=False,
    )
    assert res2.stop_reason == "layer_empties"
    assert res2.final_widths[0] == 1 and sum(res2.final_widths) > s.target_channels(sum(widths))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"channels_per_step": 0}, "channels_per_step must be an integer >= 1, got 0"),
        ({"channels_per_step": -3}, "channels_per_step"),
        ({"batches_per_step": 0}, "batches_per_step"),
        ({"stop_fraction": 0.0}, r"strictly between 0 and 1, got 0.0"),
        ({"stop_fraction": 1.0}, r"strictly between 0 and 1, got 1.0"),
        ({"stop_fraction": 1.5}, r"strictly between 0 and 1"),
        ({"pretrain_epochs": -1}, "pretrain_epochs"),
        ({"lr": 0}, "lr must be a positive number"),
    ],
)
def test_bad_settings_give_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PruneSettings(**kwargs)


def test_released_stop_rule_counts():
    # 138 of VGG11's 2752 channels remain at the 5% stop; 1376 at MorphNet's 50%.
    n = sum(default_widths("vgg11"))
    assert PruneSettings().target_channels(n) == 138
    assert PruneSettings(stop_fraction=0.5).target_channels(n) == 1376


def test_class_count_mismatch_is_an_error(data):
    with pytest.raises(ValueError, match="100 classes"):
        prune("vgg11", data, FAST, widths=TINY["vgg11"], dataset="cifar100", progress=False)


# --- resumable pruning ----------------------------------------------------------------------------------

# A smoke prune: 5 batches per epoch, a prune step every 2 (so checkpoints fall mid-epoch and on epoch
# ends), one pre-training epoch, physical shrinks from the second step on, 6 recorded rows.
_RESUMABLE = """
import torch
torch.set_num_threads(1)
from nslab.data import synthetic_data
from nslab.models import uniform_widths
from nslab.search.prune import PruneSettings, prune
data = synthetic_data(train_per_class=16, test_per_class=2)
SETTINGS = PruneSettings(channels_per_step=16, batches_per_step=2, batch_size=32, pretrain_epochs=1,
                         stop_fraction=0.05, lr_decay_every=1)
WIDTHS = uniform_widths("vgg11", 0.125)
"""


def _smoke_prune(run_dir=None, on_row=None):
    ns: dict = {}
    exec(_RESUMABLE, ns)
    return ns["prune"]("vgg11", ns["data"], ns["SETTINGS"], widths=ns["WIDTHS"], seed=3, progress=False,
                       on_row=on_row, run_dir=run_dir)


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-identity needs the same thread count in both processes
    yield
    torch.set_num_threads(n)


def test_prune_killed_mid_run_resumes_to_the_uninterrupted_trajectory(tmp_path, one_thread):
    import os
    import subprocess
    import sys

    run = tmp_path / "prune"
    # the child dies hard (no cleanup, no exception handling) inside on_row of its 3rd row
    kill = _RESUMABLE + f"""
import os
def on_row(w, p):
    if len(w) == 3:
        os._exit(17)
prune("vgg11", data, SETTINGS, widths=WIDTHS, seed=3, progress=False, on_row=on_row, run_dir={str(run)!r})
"""
    child = subprocess.run([sys.executable, "-c", kill], capture_output=True, text=True, env=os.environ.copy())
    assert child.returncode == 17, child.stderr
    ckpt = torch.load(run / "prune_checkpoint.pt", weights_only=True)
    assert len(ckpt["pruner"]["rows"]) == 3 and ckpt["pretrained"] == 1
    assert ckpt["pruner"]["phys"] != ckpt["settings"]["start_widths"]  # resumes a physically shrunk network

    seen = []
    resumed = _smoke_prune(run, on_row=lambda w, p: seen.append(len(w)))
    full = _smoke_prune()
    assert full.widths.dtype == resumed.widths.dtype == np.int64 and len(full.widths) == 6
    assert np.array_equal(resumed.widths, full.widths) and np.array_equal(resumed.params, full.params)
    assert resumed.losses == full.losses and resumed.steps == full.steps
    assert resumed.final_widths == full.final_widths and resumed.stop_reason == full.stop_reason
    assert resumed.at_half == full.at_half is not None
    assert seen == [4, 5, 6]  # the finished steps were not redone
    assert not run.exists()  # a finished run leaves no checkpoint (and no empty run directory)


class _Stop(Exception):
    pass


def _stop_after_first_row(w, p):
    raise _Stop


def test_prune_checkpoint_of_other_settings_is_refused(data, tmp_path):
    run = tmp_path / "run"
    s = dataclasses.replace(FAST, stop_fraction=0.2)
    with pytest.raises(_Stop):
        prune("vgg11", data, s, widths=TINY["vgg11"], seed=1, progress=False, run_dir=run,
              on_row=_stop_after_first_row)
    assert (run / "prune_checkpoint.pt").exists()
    with pytest.raises(ValueError, match=r"other settings \(seed: saved 1, now 2; prune.lr: saved 0.05, now 0.1\)"):
        prune("vgg11", data, dataclasses.replace(s, lr=0.1), widths=TINY["vgg11"], seed=2, progress=False,
              run_dir=run)
    with pytest.raises(ValueError, match=r"start_widths: saved \[6, 8, 8"):
        prune("vgg11", data, s, widths=[8] * 8, seed=1, progress=False, run_dir=run)
    with pytest.raises(ValueError, match="criterion: saved 'taylor_fo', now 'l1'"):
        prune("vgg11", data, s, widths=TINY["vgg11"], seed=1, progress=False, run_dir=run, criterion="l1")
    # the same settings resume, and agree with a run that never stopped
    res = prune("vgg11", data, s, widths=TINY["vgg11"], seed=1, progress=False, run_dir=run)
    full = prune("vgg11", data, s, widths=TINY["vgg11"], seed=1, progress=False)
    assert np.array_equal(res.widths, full.widths) and np.array_equal(res.params, full.params)
    assert not run.exists()


def test_pretrain_accuracy_is_recorded_and_a_floor_stops_before_pruning(data, tmp_path):
    s = PruneSettings(channels_per_step=8, batches_per_step=1, batch_size=16, pretrain_epochs=1, lr=0.05)
    w = uniform_widths("vgg11", 0.125)
    res = prune("vgg11", data, s, widths=w, progress=False)
    assert res.pretrain_accuracy is not None and 0 <= res.pretrain_accuracy <= 100
    rows = []
    floor = dataclasses.replace(s, min_pretrain_accuracy=res.pretrain_accuracy + 0.01)
    with pytest.raises(ValueError, match=r"pre-training reached .*% test accuracy after 1 epoch\(s\), below the "
                                         r"search's floor of .*%; pruning was not started"):
        prune("vgg11", data, floor, widths=w, progress=False, run_dir=tmp_path,
              on_row=lambda *a: rows.append(a))
    assert rows == []  # no step was pruned, no row recorded
    ok = dataclasses.replace(s, min_pretrain_accuracy=res.pretrain_accuracy)
    assert prune("vgg11", data, ok, widths=w, progress=False).pretrain_accuracy == res.pretrain_accuracy


def test_taylor_reads_relu6_gates_as_the_release_before_the_activation():
    # the release gates MobileNetV2's stem right after its BatchNorm: its Taylor gradient sum(u * dL/du) on
    # the BN output u, which TaylorFO(relu6_gates="before") must give from the gate after the ReLU6
    from nslab.search.criteria import TaylorFO

    torch.manual_seed(0)
    m = create_model("mobilenetv2", uniform_widths("mobilenetv2", 0.25), "cifar10").eval()
    with torch.no_grad():
        m.stem[1].weight.mul_(8.0)  # push part of the stem's BN output past 6: where the readings differ
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    seen = {}

    def grab(_m, _a, out):
        out.register_hook(lambda g: seen.update(g=g))  # dL/du at the BN output

    m.stem[1].register_forward_hook(grab)
    got = {}
    for where in ("before", "after"):
        crit = TaylorFO(where).attach(m)
        m.zero_grad()
        F.cross_entropy(m(x), y).backward()
        got[where] = crit.last[0]
        crit.detach()
    u = m.stem[1](m.stem[0](x)).detach()  # the BN output (the ReLU6 after it works in place)
    assert (u >= 6).any() and ((u > 0) & (u < 6)).any()
    ref = (u * seen["g"] * ((u > 0) & (u < 6))).sum(dim=(0, 2, 3)).double()
    torch.testing.assert_close(got["before"], ref, rtol=1e-5, atol=1e-9)
    assert not torch.allclose(got["after"], got["before"])
    with pytest.raises(ValueError, match="relu6_gates"):
        TaylorFO("inside")


@pytest.mark.parametrize("drop_last", [True, False])
def test_the_last_incomplete_minibatch_counts_towards_a_prune_step_as_in_the_release(data, monkeypatch, drop_last):
    # 160 images in minibatches of 48: three full ones and one of 16. The release's DataLoader keeps the
    # small one and it counts like any other minibatch (drop_last=False).
    import sys

    mod = sys.modules["nslab.search.prune"]  # (``nslab.prune`` the attribute is the function)
    passes: list[list[int]] = []
    real = mod.train_one_epoch

    def recording(model, batches, *a, **kw):
        sizes: list[int] = []
        passes.append(sizes)
        return real(model, (b for b in batches if not sizes.append(b[1].shape[0])), *a, **kw)

    monkeypatch.setattr(mod, "train_one_epoch", recording)
    s = PruneSettings(channels_per_step=16, batches_per_step=3, batch_size=48, pretrain_epochs=1, drop_last=drop_last)
    res = mod.prune("vgg11", data, s, widths=uniform_widths("vgg11", 0.125), seed=0, progress=False)
    assert passes[0] == ([48, 48, 48] if drop_last else [48, 48, 48, 16])  # the pre-training epoch
    pruning = [n for p in passes[1:] for n in p]
    assert (16 in pruning) is (not drop_last)
    # every minibatch trained on while pruning counts: one prune step per 3 of them, the last ends the run
    assert res.stop_reason == "fraction" and len(pruning) == 3 * res.steps


def _last_layer_kept(model):
    # A plug-in criterion: VGG11's last layer always ranks highest (never pruned), the others at random.
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    g = torch.Generator().manual_seed(sum(bn.num_features for bn in bns))
    return [torch.full((bn.num_features,), 1e9) if i == len(bns) - 1 else torch.rand(bn.num_features, generator=g)
            for i, bn in enumerate(bns)]


def test_a_layer_never_pruned_still_leaves_a_trajectory(data):
    # rows are recorded once every layer has lost a channel: never, here; the rows then come from the step where
    # every pruned layer had lost one, the kept layer constant in them
    widths = [4, 8, 8, 8, 8, 8, 8, 8]
    s = dataclasses.replace(FAST, channels_per_step=2, stop_fraction=0.5)
    res = prune("vgg11", data, s, widths=widths, criterion=_last_layer_kept, progress=False)
    assert res.stop_reason == "fraction" and res.final_widths[7] == 8
    assert len(res.widths) >= 3 and (res.widths[:, 7] == 8).all()
    assert (res.widths[:, :7] < np.asarray(widths[:7])).all()  # every row: each pruned layer already lost one
    assert (np.diff(res.widths.sum(1)) < 0).all()  # one row per step, shrinking
    assert list(res.params) == [param_count("vgg11", list(w), "cifar10") for w in res.widths]
