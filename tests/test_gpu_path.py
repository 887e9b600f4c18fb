"""The fast GPU path, checked on the CPU: chunked device batches, the graphed SGD step, the presets it
serves (gpu, paper) and bench/gpu_throughput.py's dry run."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nslab import create_model, uniform_widths
from nslab.config import PruneSettings, preset, resolve
from nslab.data import DeviceBatches, normalize, smoke_data
from nslab.data.augment import normalizer
from nslab.runs.loop import (
    GraphedStep,
    StepGraphs,
    autocast,
    capture_refusal,
    full_fp32,
    sgd_update_,
    train_one_epoch,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("dataset", ["cifar10", "tinyimagenet"])
def test_chunked_batches_equal_per_batch(dataset):
    d = smoke_data(dataset)
    n = 150 if dataset == "cifar10" else 40
    kw = dict(train=True, channels_last=True)
    one = DeviceBatches(d.train_x[:n], d.train_y[:n], d.spec, "cpu", 16, chunk=1, **kw)
    many = DeviceBatches(d.train_x[:n], d.train_y[:n], d.spec, "cpu", 16, chunk=4, **kw)
    a, b = list(one.iterate(3)), list(many.iterate(3))
    assert len(a) == len(b) == len(one) and a[-1][0].shape[0] == n % 16
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xb.is_contiguous(memory_format=torch.channels_last)
    k = 5 if len(a) > 5 else 1
    tail = list(many.iterate(3, start=k))  # a resumed pass starting inside a chunk
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a[k:], tail)) and len(tail) == len(a) - k


def test_chunk_is_checked():
    d = smoke_data("cifar10")
    with pytest.raises(ValueError, match="chunk"):
        DeviceBatches(d.train_x, d.train_y, d.spec, "cpu", 16, chunk=0)


def test_prepared_normalize_is_bit_identical():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    assert torch.equal(normalize(x, mean, std), normalize(x, mean, std, normalizer(mean, std, "cpu")))


@pytest.mark.parametrize("nesterov,wd", [(False, 5e-4), (True, 5e-4), (False, 0.0)])
def test_sgd_update_matches_torch_sgd(nesterov, wd):
    torch.manual_seed(0)
    p = [torch.randn(5, 3), torch.randn(7)]
    q = [t.clone().requires_grad_() for t in p]
    opt = torch.optim.SGD(q, lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=wd)
    bufs = [torch.zeros_like(t) for t in p]
    for step in range(4):
        grads = [torch.randn_like(t) for t in p]
        lr = 0.1 / (step + 1)
        for t, g in zip(q, grads):
            t.grad = g.clone()
        opt.param_groups[0]["lr"] = lr
        opt.step()
        sgd_update_(p, grads, bufs, torch.tensor(lr), momentum=0.9, dampening=0.0, nesterov=nesterov, weight_decay=wd)
    for a, b in zip(p, q):
        torch.testing.assert_close(a, b.detach(), rtol=1e-6, atol=1e-7)
    for a, t in zip(bufs, q):
        torch.testing.assert_close(a, opt.state[t]["momentum_buffer"], rtol=1e-6, atol=1e-7)


def test_graphed_steps_train_like_the_eager_loop():
    # 120 images in batches of 32: three steps through the graph's static tensors, the last (24) eager
    d = smoke_data("cifar10")
    batches = DeviceBatches(d.train_x[:120], d.train_y[:120], d.spec, "cpu", 32, train=True)
    torch.manual_seed(0)
    m0 = create_model("vgg11", uniform_widths("vgg11", 0.125))
    out = []
    for graphs in (None, StepGraphs(on_cpu=True)):
        m = copy.deepcopy(m0)
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        stats = [train_one_epoch(m, batches.iterate(e), opt, lambda i: 0.05 * (i + 1), graphs=graphs)
                 for e in range(2)]
        out.append((m, opt, stats))
    (m1, o1, s1), (m2, o2, s2) = out
    assert out[1][2][0].steps == 4 and isinstance(s2[0].model, torch.nn.Module)
    for a, b in zip(s1, s2):
        assert a.loss == pytest.approx(b.loss, rel=1e-4) and a.images == b.images
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)
    # the optimiser state stays torch.optim.SGD's: a checkpoint of either loads into the other
    assert set(o2.state_dict()["state"]) == set(o1.state_dict()["state"])


def test_graphed_step_refuses_other_optimisers():
    m = create_model("vgg11", uniform_widths("vgg11", 0.125))
    x, y = torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="SGD"):
        GraphedStep(m, torch.optim.Adam(m.parameters()), x, y)


def test_bf16_autocast_channels_last_step_on_cpu():
    # what the CUDA path runs (bf16 autocast, channels-last), on the CPU's bf16 kernels: finite, and close
    # to the fp32 logits
    torch.manual_seed(0)
    m = create_model("vgg11", uniform_widths("vgg11", 0.125)).to(memory_format=torch.channels_last).eval()
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(x)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), m(x), rtol=0.1, atol=0.1)


def test_paper_prunes_tinyimagenet_as_the_release():
    p = preset("paper")
    tiny = [s for s in p.benchmark if s.dataset == "tinyimagenet"]
    cifar = [s for s in p.benchmark if s.dataset != "tinyimagenet"]
    assert tiny and cifar
    for s in tiny:
        pr = p.search_for(s, variant="tiny").prune
        assert (pr.batches_per_step, pr.batch_size) == (100, 100)
    for s in cifar:
        pr = p.search_for(s, variant="cifar").prune
        assert (pr.batches_per_step, pr.batch_size) == (50, 256)
    assert p.search_for(None, variant="tiny").prune.batches_per_step == 100
    assert p.search_for(None).prune.batches_per_step == 50
    pr = p.search.prune
    assert pr.stop_when_layer_empties and pr.relu6_gates == "before" and not pr.drop_last


def test_fields_added_later_resolve_only_away_from_their_default():
    base = resolve(PruneSettings())
    assert "relu6_gates" not in base and "drop_last" not in base
    moved = resolve(dataclasses.replace(PruneSettings(), relu6_gates="before", drop_last=False))
    assert moved["relu6_gates"] == "before" and moved["drop_last"] is False
    with pytest.raises(ValueError, match="relu6_gates"):
        PruneSettings(relu6_gates="inside")


def test_gpu_preset_shares_the_gpu_and_covers_every_network():
    p = preset("gpu")
    assert 0 < p.resources.gpus < 1
    assert {s.arch for s in p.benchmark} == {"vgg11", "resnet18", "mobilenetv2"}
    assert {s.dataset for s in p.benchmark} == {"cifar10", "cifar100"}
    s = p.search_for(p.benchmark[0])
    assert s.start_ratio == 1.0 and (s.prune.pretrain_epochs, s.prune.pretrain_lr) == (10, 0.1)
    assert s.iterations < preset("paper").search.iterations
    assert p.recipe("cifar").epochs < preset("paper").recipe("cifar").epochs


def test_gpu_throughput_bench_dry_run_on_cpu():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_throughput.py"), "--device", "cpu", "--smoke"],
                         capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["device"] == "cpu" and out["single_images_per_s"] > 0
    for mode in ("processes", "streams"):
        assert set(out[mode]) == {"1", "2"} and all(v > 0 for v in out[mode].values())
    assert out["goal"] == 100_000 and out["goal_met"] is False


def test_gpu_check_smoke_run_on_cpu():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--smoke"],
                         capture_output=True, text=True, env=env, timeout=400, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [json.loads(line) for line in res.stdout.strip().splitlines()]
    checks = [d["check"] for d in lines]
    assert checks[0] == "device" and checks.count("forward") == 3 and checks.count("latency") == 4
    assert {"train+resume", "cuda_graphs", "descent", "epoch"} <= set(checks)
    lat = next(d for d in lines if d["check"] == "latency")
    assert lat["protocol"] == lat["eager_protocol"] == "cpu-wall" and lat["mean_ms"] > 0
    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--checks", "speed"],
                         capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and "accepted: forward" in bad.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_steps_capture_on_streams_of_their_own():
    m = create_model("vgg11", uniform_widths("vgg11", 0.125)).cuda()
    steps = []
    for _ in range(2):
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        x, y = torch.randn(8, 3, 32, 32, device="cuda"), torch.zeros(8, dtype=torch.long, device="cuda")
        steps.append(GraphedStep(m, opt, x, y))
    a, b = steps
    assert a.graph is not None and a.stream is not None and a.stream != b.stream
    assert a.stream != torch.cuda.current_stream()
    loss, _ = b(x, y, 0.01)
    assert torch.isfinite(loss)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_train_like_eager_on_cuda():
    from nslab.data import synthetic_data
    from nslab.runs.train import recipe, train

    data = synthetic_data(10, 64, 16)
    r = dataclasses.replace(recipe("smoke", "synthetic"), epochs=2)
    hist = []
    for graphs in (False, True):
        torch.manual_seed(0)
        m = create_model("vgg11", uniform_widths("vgg11", 0.125))
        hist.append(train(m, data, r, device="cuda", progress=False, cuda_graphs=graphs))
    for a, b in zip(hist[0].records, hist[1].records):  # bf16: close, not equal
        assert a.train_loss == pytest.approx(b.train_loss, rel=0.05)
    assert hist[1].best_test_acc >= hist[0].best_test_acc - 10


# --- graph safety ----------------------------------------------------------------------------------------


def _small():
    torch.manual_seed(0)
    return create_model("vgg11", uniform_widths("vgg11", 0.125))


@pytest.mark.parametrize("hook", ["forward", "forward_pre", "full_backward", "parameter"])
def test_capture_is_refused_when_the_model_has_hooks(hook):
    m = _small()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)
    assert capture_refusal(m) is None
    conv = next(c for c in m.modules() if isinstance(c, torch.nn.Conv2d))
    if hook == "parameter":
        h = conv.weight.register_hook(lambda g: g)
    else:
        h = getattr(conv, f"register_{hook}_hook")(lambda *a: None)
    why = capture_refusal(m)
    assert why is not None and "replay would skip" in why
    with pytest.raises(ValueError, match="refuses to capture"):
        GraphedStep(m, opt, x, y)
    graphs = StepGraphs(on_cpu=True)
    assert graphs.get(m, opt, x, y) is None and graphs.refused == why and graphs.captures == 0
    h.remove()
    assert graphs.get(m, opt, x, y) is not None and graphs.refused is None and graphs.captures == 1


def test_a_graph_stops_replaying_once_hooks_appear():
    m = _small()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)
    graphs = StepGraphs(on_cpu=True)
    step = graphs.get(m, opt, x, y)
    assert step is not None and step.matches(m, opt, x)
    h = next(m.children()).register_forward_hook(lambda *a: None)
    assert not step.matches(m, opt, x) and graphs.get(m, opt, x, y) is None and graphs.refused
    h.remove()
    assert graphs.get(m, opt, x, y) is step  # the same graph again, not a new capture
    assert graphs.captures == 1


def test_the_pruners_hooked_model_trains_eagerly_beside_graphs():
    # what the pruning epochs look like to a StepGraphs: gates with mask and Taylor-FO hooks
    from nslab.search.pruner import Pruner

    d = smoke_data("cifar10")
    batches = DeviceBatches(d.train_x[:64], d.train_y[:64], d.spec, "cpu", 32, train=True)
    m = _small()
    pruner = Pruner("vgg11", uniform_widths("vgg11", 0.125), PruneSettings(batches_per_step=1, channels_per_step=2))
    pruner.attach(m)
    graphs = StepGraphs(on_cpu=True)
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.5)
    train_one_epoch(m, batches.iterate(0), opt, lambda i: 0.05, pruner.on_step, graphs=graphs)
    assert graphs.step is None and graphs.captures == 0 and "has forward hooks" in graphs.refused
    assert pruner.steps == 2  # the hooks ran: scores were accumulated and channels removed


def test_step_graphs_recapture_when_the_shapes_change_after_a_shrink():
    # a prune step swaps in a physically smaller network: the graph is captured anew for it (and the run
    # trains as the eager loop does), rather than every later step running eagerly
    from nslab.search.channels import shrink_model

    d = smoke_data("cifar10")
    batches = DeviceBatches(d.train_x[:128], d.train_y[:128], d.spec, "cpu", 32, train=True)
    widths = uniform_widths("vgg11", 0.125)
    m0 = _small()
    out = []
    for graphs in (None, StepGraphs(on_cpu=True)):
        m = copy.deepcopy(m0)
        opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
        models = []

        def on_step(st, models=models):
            models.append(st.model)
            if st.index == 1:
                keep = {0: torch.arange(widths[0] - 2)}
                st.model, _, st.optimizer = shrink_model(st.model, "vgg11", widths, keep, optimizer=st.optimizer)

        stats = train_one_epoch(m, batches.iterate(0), opt, lambda i: 0.05, on_step, graphs=graphs)
        out.append((stats, models, graphs))
    (s1, _, _), (s2, models, graphs) = out
    assert graphs.captures == 2 and graphs.step.model is s2.model and graphs.step.model is models[-1]
    assert graphs.step.shapes[0][0] == widths[0] - 2
    assert s1.loss == pytest.approx(s2.loss, rel=1e-4)
    for (k, a), b in zip(s1.model.state_dict().items(), s2.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)


def test_a_graph_captured_on_a_short_batch_is_recaptured_at_the_full_one():
    m = _small()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    graphs = StepGraphs(on_cpu=True)
    short, full = torch.randn(8, 3, 32, 32), torch.randn(16, 3, 32, 32)
    assert graphs.get(m, opt, short, torch.zeros(8, dtype=torch.long)).x.shape[0] == 8
    assert graphs.get(m, opt, full, torch.zeros(16, dtype=torch.long)).x.shape[0] == 16
    assert graphs.get(m, opt, short, torch.zeros(8, dtype=torch.long)) is None  # short again: eager
    assert graphs.captures == 2


def test_the_fp32_option_is_a_late_setting_and_the_paper_preset_uses_it():
    assert "precision" not in resolve(PruneSettings())  # smoke/cpu/gpu keys stay
    assert resolve(PruneSettings(precision="fp32"))["precision"] == "fp32"
    with pytest.raises(ValueError, match="precision"):
        PruneSettings(precision="fp16")
    assert preset("paper").search.prune.precision == "fp32"
    assert all(preset(n).search.prune.precision == "bf16" for n in ("smoke", "cpu", "gpu"))


def test_fp32_turns_autocast_and_tf32_off_on_cuda():
    cuda = torch.device("cuda")
    assert isinstance(autocast(cuda, enabled=False), type(autocast(torch.device("cpu"))))  # a no-op
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with full_fp32(cuda):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        with full_fp32(torch.device("cpu")):
            assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_prune_runs_every_step_at_its_precision_with_pretraining_autotuned(precision, monkeypatch):
    import nslab.search.prune as mod

    seen, tuned = [], []
    real, real_bench = mod.train_one_epoch, mod.cudnn_benchmark

    def spy(*a, **kw):
        seen.append(kw.get("amp", True))
        return real(*a, **kw)

    def bench(device):
        tuned.append(str(device))
        return real_bench(device)

    monkeypatch.setattr(mod, "train_one_epoch", spy)
    monkeypatch.setattr(mod, "cudnn_benchmark", bench)
    d = smoke_data("cifar10")
    s = PruneSettings(channels_per_step=40, batches_per_step=1, batch_size=32, pretrain_epochs=1, augment=False,
                      stop_fraction=0.5, precision=precision)
    mod.prune("vgg11", d, s, widths=uniform_widths("vgg11", 0.125), progress=False)
    assert len(seen) >= 2 and set(seen) == {precision == "bf16"}
    assert tuned == ["cpu"]  # pre-training runs under cudnn_benchmark, as training does

