"""The planner: grid counts, the throughput fit, the dependency-aware schedule, the command."""

import json

import pytest

from nslab import config
from nslab.cli import main as cli_main
from nslab.paths import paths as make_paths
from nslab.runs import grid, plan


def test_schedule_respects_dependencies_and_slots():
    d = {"a": 3.0, "b": 2.0, "c": 4.0, "d": 1.0}
    deps = {"b": ["a"], "d": ["b", "c"]}
    assert plan.schedule(d, deps, 1) == 10.0  # one slot: the sum
    assert plan.schedule(d, deps, 2) == 6.0  # a -> b (5) beside c (4), then d
    assert plan.schedule(d, deps, 10) == 6.0  # the critical path a -> b -> d
    with pytest.raises(ValueError, match="slots must be >= 1, got 0"):
        plan.schedule(d, deps, 0)


def test_probe_fit_recovers_a_linear_cost(monkeypatch):
    a, b = 2e-4, 3e-11
    monkeypatch.setattr(plan, "_step_seconds", lambda arch, w, ds, cc, batch, dev, budget: a + b * sum(w) * 1e6)
    configs = {"vgg11": [(m * 1e6, (m,), "cifar10", False, 64) for m in (5, 1, 20, 9)]}
    fit = plan.probe_throughput(configs, "cpu")["vgg11"]
    assert fit["a"] == pytest.approx(a) and fit["b"] == pytest.approx(b)
    assert [p[0] for p in fit["points"]] == [1e6, 9e6, 20e6]  # least, middle and most MACs are timed


def test_plan_counts_the_grid_and_prices_it(tmp_path):
    p = config.SMOKE
    where = make_paths("smoke", tmp_path / "fig", tmp_path / "res")
    ts = grid.tasks(p, where)
    out = plan.plan(p, where, gpus=2, seconds_per_point=0.05)
    g = out["grid"]
    assert g["search_iterations"] == sum(t.kind == "search" for t in ts)
    assert g["training_runs"] == sum(t.kind == "train" for t in ts)
    assert g["searches"] == len({t.job.run_dir for t in ts if t.kind == "search"})
    # smoke: one epoch per run on 64 images (Li et al.: the start network's epoch, then one fine-tuning epoch)
    assert g["epochs"] == g["training_runs"] + 1 + sum(
        t.job.spec.settings.prune.pretrain_epochs for t in ts if t.kind == "search")
    assert set(out["probe"]["fits"]) == {"vgg11", "resnet18", "mobilenetv2", p.your_network.arch}  # + notebook 09
    assert 0 < out["wall_hours"] <= out["wall_hours_one_task_per_device"] <= out["device_hours"]
    assert sum(c["tasks"] for c in out["configurations"]) == len(ts)
    assert "check" not in out  # nothing on disk yet to compare with


def test_plan_command(capsys):
    assert cli_main(["plan", "--profile", "smoke", "--no-probe", "--gpus", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["profile"] == "smoke" and out["grid"]["training_runs"] > 0 and "device_hours" not in out
    assert cli_main(["plan", "--profile", "smoke", "--no-probe", "--gpus", "0"]) == 2
    assert "gpus must be an integer >= 1, got 0" in capsys.readouterr().err
