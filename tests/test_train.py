"""nslab.train on synthetic data (CPU, seconds): learning, exact resume, NaN handling, recipes."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from nslab import create_model, uniform_widths
from nslab.data import DeviceBatches, synthetic_data
from nslab.runs.train import (
    History,
    NonFiniteLossError,
    Recipe,
    Step,
    channels_last_ok,
    evaluate,
    learning_rate,
    recipe,
    scale_epochs,
    seed_everything,
    train,
    train_one_epoch,
)

SMALL_VGG = [8, 16, 16, 16, 32, 32, 32, 32]


@pytest.fixture(scope="module")
def data():
    return synthetic_data()


@pytest.fixture(scope="module")
def tiny_data():
    return synthetic_data(train_per_class=16, test_per_class=8)


def small_vgg(spec, seed: int = 0) -> nn.Module:
    seed_everything(seed)
    return create_model("vgg11", SMALL_VGG, dataset=spec)


def quick(epochs: int = 4) -> Recipe:
    return dataclasses.replace(recipe("smoke"), epochs=epochs, batch_size=32)


def test_small_vgg11_learns_the_synthetic_task(data):
    model = small_vgg(data.spec)
    before = evaluate(model, DeviceBatches(data.test_x, data.test_y, data.spec, "cpu", 256))[1]
    h = train(model, data, recipe("smoke", "synthetic"), device="cpu", progress=False)
    assert len(h) == 5 and [r.epoch for r in h.records] == [1, 2, 3, 4, 5]
    assert before < 30  # chance is 10%
    assert h.best_test_acc >= 80, h.column("test_acc")
    assert h.best_test_acc == max(h.column("test_acc")) and h.last_test_acc == h.records[-1].test_acc
    assert h.records[-1].train_loss < h.records[0].train_loss
    assert all(r.seconds > 0 and math.isfinite(r.test_loss) for r in h.records)


def _state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _no_time(h: History) -> list[dict]:
    return [{k: v for k, v in dataclasses.asdict(r).items() if k != "seconds"} for r in h.records]


class Stop(Exception):
    pass


def test_resume_after_interruption_equals_an_uninterrupted_run(tiny_data, tmp_path: Path):
    r = quick(epochs=4)
    full_model = small_vgg(tiny_data.spec, seed=1)
    full = train(full_model, tiny_data, r, device="cpu", seed=7, run_dir=tmp_path / "full", progress=False)

    def interrupt(rec):
        if rec.epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train(small_vgg(tiny_data.spec, seed=1), tiny_data, r, "cpu", 7, tmp_path / "cut", False, interrupt)
    log = (tmp_path / "cut" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]

    # a different initialisation proves the weights come from the checkpoint
    resumed_model = small_vgg(tiny_data.spec, seed=99)
    seen = []
    resumed = train(resumed_model, tiny_data, r, "cpu", 7, tmp_path / "cut", False, lambda rec: seen.append(rec.epoch))
    assert seen == [3, 4]
    assert _no_time(resumed) == _no_time(full)
    a, b = _state(full_model), _state(resumed_model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2, 3, 4]
    settings = json.loads((tmp_path / "cut" / "settings.json").read_text())
    assert settings["recipe"] == r.to_dict() and settings["seed"] == 7 and settings["dataset"] == "synthetic"

    # a finished run is not trained again
    again_model = small_vgg(tiny_data.spec, seed=5)
    again = train(again_model, tiny_data, r, "cpu", 7, tmp_path / "cut", False, lambda rec: seen.append(0))
    assert seen == [3, 4] and _no_time(again) == _no_time(full)
    assert all(torch.equal(v, b[k]) for k, v in _state(again_model).items())


def test_train_one_epoch_continues_with_what_on_step_swaps_in_and_stops_when_asked(tiny_data):
    a, b = small_vgg(tiny_data.spec, seed=1), small_vgg(tiny_data.spec, seed=2).eval()
    opt_a = torch.optim.SGD(a.parameters(), lr=1.0, momentum=0.9)
    opt_b = torch.optim.SGD(b.parameters(), lr=1.0, momentum=0.9)
    b0 = _state(b)
    batches = DeviceBatches(tiny_data.train_x, tiny_data.train_y, tiny_data.spec, "cpu", 32, train=True)
    assert len(batches) == 5
    seen, a_at_swap = [], {}

    def on_step(st: Step) -> None:
        seen.append((st.epoch, st.index, st.model is a, st.optimizer.param_groups[0]["lr"], st.model.training))
        if st.index == 1:  # e.g. the pruner after a physical shrink
            a_at_swap.update(_state(a))
            st.model, st.optimizer = b, opt_b
        if st.index == 3:
            st.stop = True

    stats = train_one_epoch(a, batches.iterate(0, start=1), opt_a, lambda i: 0.01 * (i + 1), on_step, start=1, epoch=4)
    # batches 1..3 of the pass: the first on a, then b (put in training mode), each at its step's lr
    assert seen == [(4, 1, True, 0.02, True), (4, 2, False, 0.03, True), (4, 3, False, 0.04, True)]
    assert stats.steps == 3 and stats.images == 96 and stats.stopped
    assert stats.model is b and stats.optimizer is opt_b
    assert math.isfinite(stats.loss) and 0 <= stats.acc <= 100
    assert all(torch.equal(v, a_at_swap[k]) for k, v in _state(a).items())  # a untouched after the swap
    assert any(not torch.equal(v, b0[k]) for k, v in _state(b).items())  # b trained
    assert len(opt_b.state) > 0 and all("momentum_buffer" in st for st in opt_b.state.values())

    full = train_one_epoch(b, batches.iterate(1), opt_b, lambda i: 0.01)
    assert (full.steps, full.images, full.stopped) == (5, tiny_data.num_train, False)


def test_same_seed_same_run_other_seed_other_run(tiny_data):
    r = quick(epochs=1)
    h1 = train(small_vgg(tiny_data.spec), tiny_data, r, "cpu", seed=3, progress=False)
    h2 = train(small_vgg(tiny_data.spec), tiny_data, r, "cpu", seed=3, progress=False)
    h3 = train(small_vgg(tiny_data.spec), tiny_data, r, "cpu", seed=4, progress=False)
    assert _no_time(h1) == _no_time(h2)
    assert _no_time(h1) != _no_time(h3)


def test_resume_refuses_other_settings(tiny_data, tmp_path: Path):
    train(small_vgg(tiny_data.spec), tiny_data, quick(1), "cpu", 0, tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"other settings \(recipe"):
        train(small_vgg(tiny_data.spec), tiny_data, quick(2), "cpu", 0, tmp_path, progress=False)
    with pytest.raises(ValueError, match="seed: saved 0, now 1"):
        train(small_vgg(tiny_data.spec), tiny_data, quick(1), "cpu", 1, tmp_path, progress=False)


class NaNAfter(nn.Module):
    """Wraps a model; its training-mode outputs turn NaN from the ``n``-th training forward on."""

    def __init__(self, inner: nn.Module, n: int):
        super().__init__()
        self.inner, self.n, self.calls = inner, n, 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.n:
                out = out * float("nan")
        return out


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tiny_data, tmp_path: Path):
    r = quick(epochs=3)
    steps = math.ceil(tiny_data.num_train / r.batch_size)  # 5 per epoch
    model = NaNAfter(small_vgg(tiny_data.spec), n=steps + 3)  # 3rd step (0-based 2) of epoch 2
    saved = {}
    with pytest.raises(NonFiniteLossError) as e:
        train(model, tiny_data, r, "cpu", 0, tmp_path, False, lambda rec: saved.update(_state(model)))
    err = e.value
    assert isinstance(err, FloatingPointError)
    assert (err.epoch, err.step) == (2, 2) and math.isnan(err.loss)
    assert "epoch 2, step 2" in str(err) and str(tmp_path / "checkpoint.pt") in str(err)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert all(torch.equal(ckpt["model"][k], v) for k, v in saved.items())
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 1

    with pytest.raises(NonFiniteLossError, match="no checkpoint was written"):
        train(NaNAfter(small_vgg(tiny_data.spec), 1), tiny_data, r, "cpu", progress=False)


def test_recipes_and_schedules():
    p = recipe("paper", "cifar10")
    assert (p.epochs, p.batch_size, p.lr, p.momentum, p.weight_decay) == (300, 128, 0.1, 0.5, 5e-4)
    lrs = {e + 1: learning_rate(p, e) for e in (0, 98, 99, 198, 199, 248, 249, 299)}
    assert lrs == pytest.approx({1: 0.1, 99: 0.1, 100: 0.01, 199: 0.01, 200: 1e-3, 249: 1e-3, 250: 1e-4, 300: 1e-4})
    t = recipe("paper", "tinyimagenet")
    assert t.epochs == 150 and learning_rate(t, 48) == 0.1 and learning_rate(t, 49) == pytest.approx(0.01)
    assert recipe("paper", "cifar100") == p and recipe("cpu", "synthetic") == recipe("cpu", "cifar10")

    c = recipe("cpu", "cifar10")
    steps = 196
    ramp = [learning_rate(c, 0, s, steps) for s in range(steps)]
    assert ramp[0] > 0 and ramp == sorted(ramp) and ramp[-1] == pytest.approx(c.lr)
    tail = [learning_rate(c, e, s, steps) for e in range(1, c.epochs) for s in range(steps)]
    assert tail == sorted(tail, reverse=True) and 0 <= tail[-1] < 0.01 * c.lr

    s = scale_epochs(p, 30)
    assert s.epochs == 30 and s.milestones == (10, 20, 25)
    assert dataclasses.replace(p, subset=100).subset == 100
    assert Recipe.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match=r"unknown \w+ 'fast'; accepted: .*paper"):
        recipe("fast", "cifar10")
    with pytest.raises(ValueError, match="unknown dataset"):
        recipe("paper", "imagenet")
    with pytest.raises(ValueError, match="unknown schedule"):
        Recipe("x", 1, schedule="cosine")


def test_recipe_subset_is_applied(tiny_data, tmp_path: Path):
    r = dataclasses.replace(quick(1), subset=40, subset_mode="balanced")
    h = train(small_vgg(tiny_data.spec), tiny_data, r, "cpu", run_dir=tmp_path, progress=False)
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert (settings["num_train"], settings["num_test"]) == (40, tiny_data.num_test)
    assert len(h) == 1 and h.records[0].train_acc * 40 / 100 == pytest.approx(round(h.records[0].train_acc * 0.4))


def test_evaluate_restores_training_mode(tiny_data):
    m = small_vgg(tiny_data.spec).train()
    loss, acc = evaluate(m, DeviceBatches(tiny_data.test_x, tiny_data.test_y, tiny_data.spec, "cpu", 50))
    assert m.training and math.isfinite(loss) and 0 <= acc <= 100


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_learns_and_resumes(data, tmp_path: Path):
    r = recipe("smoke", "synthetic")
    model = small_vgg(data.spec)
    h = train(model, data, r, device="cuda", run_dir=tmp_path, progress=False)
    assert next(model.parameters()).is_cuda and h.best_test_acc >= 80
    again = train(small_vgg(data.spec), data, r, device="cuda", run_dir=tmp_path, progress=False)
    assert _no_time(again) == _no_time(h)


def test_cli_functions_print_a_summary(tmp_path: Path):
    from nslab.cli import build_parser

    parser = build_parser()
    widths = ",".join(map(str, SMALL_VGG))
    args = parser.parse_args(
        ["train", "vgg11", "--dataset", "synthetic", "--widths", widths, "--recipe", "smoke", "--epochs", "2"]
        + ["--out", str(tmp_path / "run"), "--quiet", "--device", "cpu"]
    )
    out = args.func(args)
    assert out["params"] == sum(p.numel() for p in small_vgg(synthetic_data().spec).parameters())
    assert out["epochs"] == 2 and 0 <= out["last_test_acc"] <= out["best_test_acc"] <= 100
    assert out["device"] == "cpu" and json.loads(json.dumps(out)) == out
    assert (tmp_path / "run" / "checkpoint.pt").exists()

    args = parser.parse_args(["latency", "vgg11", "--ratio", "0.125", "--repeat", "2", "--warmup", "1"])
    out = args.func(args)
    assert out["widths"] == [8, 16, 32, 32, 64, 64, 64, 64] and out["mean_ms"] > 0 and out["batch"] == 100
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "vgg11", "--widths", "8,8", "--ratio", "0.5"])  # mutually exclusive


def test_channels_last_only_for_plain_convs_on_cpu():
    # torch 2.14's CPU channels-last backward aborts or hangs on depthwise and 1x1 convs
    cpu = torch.device("cpu")
    assert channels_last_ok(cpu, create_model("vgg11", uniform_widths("vgg11", 0.125)))
    assert not channels_last_ok(cpu, create_model("resnet18", uniform_widths("resnet18", 0.125)))
    assert not channels_last_ok(cpu, create_model("mobilenetv2", uniform_widths("mobilenetv2", 0.25)))
    assert channels_last_ok(torch.device("cuda"), create_model("resnet18", uniform_widths("resnet18", 0.125)))
