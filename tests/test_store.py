"""Run caching (one JSON per run, consolidated table), summaries, and the paper's transcribed numbers."""

import json

import pytest

from nslab.runs.store import ResultsStore, RunSpec
from nslab.views import tables as results


def spec(**kw) -> RunSpec:
    base = dict(method="uniform", arch="vgg11", dataset="cifar10", ratio=0.25, seed=0,
                widths=(16, 32, 64, 64, 128, 128, 128, 128), recipe={"name": "cpu", "epochs": 4})
    return RunSpec(**{**base, **kw})


def test_key_is_stable_and_changes_with_every_setting():
    assert spec().key == spec().key
    keys = {spec().key, spec(seed=1).key, spec(ratio=0.5).key, spec(widths=(16,) * 8).key,
            spec(recipe={"name": "cpu", "epochs": 5}).key, spec(convcut=True).key,
            spec(tags=(("pretrain_epochs", 0),)).key, spec(method="morphnet").key,
            spec(protocol={"test_subset": 2000}).key, spec(protocol={"latency": {"batch": 8}}).key,
            spec(protocol={"device": "cuda"}).key, spec(protocol={"data": {"hash": "x"}}).key}
    assert len(keys) == 12
    assert spec().run_id.startswith("uniform_vgg11_cifar10_r0.25_s0_")


def test_ensure_computes_missing_runs_once_and_writes_table(tmp_path):
    calls = []

    def compute(s):
        calls.append(s.key)
        return {"acc": 50.0 + s.seed, "params": 1000, "latency_ms": 2.0}

    store = ResultsStore(tmp_path)
    specs = [spec(seed=0), spec(seed=1), spec(seed=0)]  # a duplicate is computed once
    recs = store.ensure(specs, compute, progress=False)
    assert [r["acc"] for r in recs] == [50.0, 51.0, 50.0]
    assert len(calls) == 2
    again = store.ensure(specs + [spec(seed=2)], compute, progress=False)
    assert len(calls) == 3  # only the new run
    assert [r["seed"] for r in again] == [0, 1, 0, 2]
    assert len(list((tmp_path / "runs").glob("*.json"))) == 3
    assert not list(tmp_path.rglob("*.tmp"))
    table = (tmp_path / "results.csv").read_text().splitlines()
    assert table[0].startswith("method,") and len(table) == 4
    assert len(json.loads((tmp_path / "results.json").read_text())) == 3


def test_a_record_with_another_key_is_not_reused(tmp_path):
    store = ResultsStore(tmp_path)
    s = spec()
    store.put(s, {"acc": 1.0, "params": 1})
    rec = json.loads(store.path(s).read_text())
    rec["key"] = "something else"
    store.path(s).write_text(json.dumps(rec))
    assert store.get(s) is None


def test_summarize_mean_and_population_std():
    recs = [{"method": "uniform", "ratio": 0.25, "seed": s, "acc": a, "params": 100, "latency_ms": 1.0}
            for s, a in ((0, 88.0), (1, 90.0))]
    recs.append({"method": "uniform", "ratio": 0.75, "seed": 0, "acc": 91.0, "params": 300})
    rows = results.summarize(recs)
    assert [(r["ratio"], r["n"]) for r in rows] == [(0.25, 2), (0.75, 1)]
    assert rows[0]["acc_mean"] == pytest.approx(89.0)
    assert rows[0]["acc_std"] == pytest.approx(1.0)  # ddof 0, as the paper
    assert rows[0]["seeds"] == [0, 1]


def test_paper_results_transcription():
    t1 = results.paper_results(table=1)
    assert len(t1) == 13 + 13 + 9
    r = results.paper_results(table=1, arch="vgg11", dataset="cifar10", method="uniform")
    assert [(x["ratio"], x["params_m"], x["acc_mean"], x["acc_std"]) for x in r] == [
        (0.25, 0.58, 88.18, 0.16), (0.75, 5.2, 91.64, 0.1), (2.0, 36.89, 92.96, 0.09)]
    headline = {(x["arch"], x["method"]): x["acc_mean"] for x in t1 if x["ratio"] == 0.25}
    assert headline[("vgg11", "neuralscale_it15")] == 91.22
    assert headline[("mobilenetv2", "neuralscale_it15")] == 66.36
    assert headline[("resnet18", "neuralscale_it15")] == 53.95
    assert {x["pretrain_epochs"] for x in results.paper_results(table=3) if "pretrain_epochs" in x} == {
        0, 2, 5, 10, 30, 60}
    assert {x["method"] for x in results.paper_results(table=5)} == {
        "uniform", "morphnet", "uniform_convcut", "neuralscale_it1", "neuralscale_it15"}
    assert {x["arch"] for x in results.paper_results(table=6)} == {"resnet18"}
    for x in results.paper_results():
        assert 0 < x["acc_std"] < 1.5 and 30 < x["acc_mean"] < 95 and x["latency_ms"] > 0


def test_comparison_table_puts_the_paper_beside_the_run():
    summary = [{"method": "neuralscale_last", "ratio": 0.25, "params": 579_600, "latency_ms": 3.0,
                "acc_mean": 80.0, "acc_std": 0.5, "n": 2, "iteration": 15},
               {"method": "uniform", "ratio": 0.5, "params": 2_300_000, "latency_ms": float("nan"),
                "acc_mean": 79.0, "acc_std": 0.0, "n": 1}]
    paper = results.paper_results(table=1, arch="vgg11", dataset="cifar10")
    rows = results.comparison_table(summary, paper, arch="vgg11", dataset="cifar10", epochs=300)
    assert rows[0]["paper_accuracy"] == "91.22 ± 0.15" and rows[0]["accuracy"] == "80.00 ± 0.50"
    assert rows[0]["paper_params_m"] == 0.58 and rows[0]["params_m"] == pytest.approx(0.5796)
    assert rows[0]["paper_latency_ms"] == 2.94 and rows[0]["label"] == "NeuralScale (Iteration = 15)"
    assert rows[0]["paper_setting"] == "vgg11 cifar10, NeuralScale (Iteration = 15), 0.58M params, 91.22 ± 0.15%"
    assert rows[1]["paper_accuracy"] == "" and rows[1]["latency_ms"] is None  # the paper has no r = 0.5 row
    assert rows[1]["paper_setting"] == ""
    assert rows[1]["accuracy"] == "79.00"  # one seed: no "± 0.00"
    # without the run's setting nothing is compared, but the paper's row is still named
    unknown = results.comparison_table(summary, paper)[0]
    assert unknown["paper_accuracy"] == "" and unknown["paper_params_m"] is None
    assert unknown["paper_setting"].startswith("vgg11 cifar10")
