import json
import subprocess
import sys
from pathlib import Path

import pytest

from nslab.cli import main
from nslab.models import macs, param_count, uniform_widths
from nslab.reproduce import NotebookFailed

GEN = ["widths", "params", "target", "rel_error"]
SEARCH = ["search", "vgg11", "--profile", "smoke", "--iterations", "1", "--out", "{search}"]

# Every subcommand on its tiniest settings (smoke preset, synthetic data, 1/8 widths), without --quiet: its
# progress bars and log lines must reach stderr only. Placeholders: {tmp} (the test's folder), {ref} (the
# authors' reference files), {search} (a shared smoke search run directory).
CASES = {
    "params": (["params", "vgg11", "--ratio", "0.125"], ["arch", "dataset", "widths", "params", "macs"]),
    "fit": (["fit", "{ref}/vgg_10_eff_c10_14.csv", "--arch", "vgg11", "--out", "{tmp}/fit.json"],
            ["alpha", "beta", "r2", "rows"]),
    "generate-fit": (["generate", "--fit", "{ref}/vgg_10_eff_c10.fits.json", "--arch", "vgg11", "--dataset",
                      "cifar10", "--ratio", "0.25"], GEN),
    "generate-published": (["generate", "--published", "vgg11-cifar10", "--budget", "1e6", "--round-to", "8"], GEN),
    "train": (["train", "vgg11", "--dataset", "synthetic", "--ratio", "0.125", "--recipe", "smoke", "--epochs", "1",
               "--device", "cpu", "--out", "{tmp}/train"],
              ["arch", "dataset", "widths", "params", "recipe", "epochs", "best_test_acc", "best_epoch",
               "last_test_acc", "seconds", "device", "run_dir"]),
    "latency": (["latency", "vgg11", "--ratio", "0.125", "--batch", "2", "--warmup", "0", "--repeat", "2"],
                ["arch", "dataset", "widths", "params", "device", "batch", "threads", "mean_ms", "std_ms"]),
    "search": (SEARCH, ["run_dir", "settings", "iterations"]),
    "generate-run": (["generate", "--run", "{search}", "--iteration", "1", "--ratio", "0.125"], GEN),
    "baseline-morphnet": (["baseline", "morphnet", "vgg11", "--profile", "smoke", "--ratios", "0.25,0.5",
                           "--out", "{tmp}/morphnet"], ["method", "out", "base_widths", "configs"]),
    "baseline-li": (["baseline", "li", "vgg11", "--profile", "smoke", "--epochs", "1", "--out", "{tmp}/li"],
                    ["method", "out", "widths", "params", "target", "rel_error", "keep_ratio",
                     "train_best_test_acc", "finetune_best_test_acc"]),
    "reproduce": (["reproduce", "--profile", "smoke", "--only", "03", "--build-dir", "{tmp}/b", "--figures-dir",
                   "{tmp}/f", "--results-dir", "{tmp}/r"], ["profile", "executor", "grid", "notebooks", "seconds"]),
}


def run(capfd, *argv):
    """``nslab ARGV`` in-process: (status, stdout, stderr), captured at the file-descriptor level."""
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


def one_json_object(out: str) -> dict:
    lines = out.splitlines()
    assert len(lines) == 1 and out.endswith("\n"), f"stdout must be one JSON line, got {out!r}"
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("search")


@pytest.fixture
def argv_of(tmp_path, ref_dir, search_dir, capfd):
    """Fill the placeholders of an argv; a ``{search}`` read (not the search itself) runs the search first."""

    def fill(argv):
        if "{search}" in argv and argv[0] != "search" and not (search_dir / "iter_01" / "summary.json").exists():
            assert run(capfd, *fill(SEARCH))[0] == 0
        return [a.format(tmp=tmp_path, ref=ref_dir, search=search_dir) for a in argv]

    return fill


@pytest.mark.parametrize("case", list(CASES))
def test_every_command_prints_one_json_object(capfd, argv_of, case):
    argv, keys = CASES[case]
    code, out, err = run(capfd, *argv_of(argv))
    assert code == 0, err
    obj = one_json_object(out)
    assert list(obj) == keys
    if case == "search":  # the per-iteration log line used to precede the JSON on stdout
        assert "iteration 1:" in err and len(obj["iterations"]) == 1
    if case == "generate-run":
        assert obj["params"] == param_count("vgg11", obj["widths"], "cifar10")
    if case == "baseline-li":
        assert obj["method"] == "li" and obj["params"] <= param_count("vgg11", uniform_widths("vgg11", 0.125))
    if case == "reproduce":
        assert [n["notebook"] for n in obj["notebooks"]] == ["03_budget_explorer.ipynb"]


@pytest.mark.parametrize(
    "argv,prefix,match",
    [(["search", "vgg11", "--profile", "nope", "--out", "{tmp}"], "nslab search", "'nope'"),
     (["baseline", "li", "vgg11", "--profile", "smoke", "--budget", "100", "--out", "{tmp}"], "nslab baseline li",
      "got 100"),
     (["generate", "--published", "vgg11-cifar10", "--budget", "100"], "nslab generate", "below the smallest"),
     (["params", "vgg11", "--widths", "8,x"], "nslab params", "'8,x'"),
     (["params", "vgg11", "--widths", "1,2,3"], "nslab params", "expected 8 widths"),
     (["train", "vgg11", "--dataset", "synthetic", "--widths", "8,8", "--recipe", "smoke"], "nslab train",
      "expected 8 widths"),
     (["search", "vgg11", "--profile", "smoke", "--iterations", "0", "--out", "{tmp}"], "nslab search", "got 0"),
     (["generate", "--run", "{tmp}", "--ratio", "0.25"], "nslab generate", "not a search run directory"),
     (["reproduce", "--profile", "smoke", "--only", "99", "--build-dir", "{tmp}"], "nslab reproduce", "99"),
     (["fit", "missing.csv", "--arch", "vgg11"], "nslab fit", "no such trajectory"),
     (["generate", "--fit", "missing.json", "--ratio", "1"], "nslab generate", "no such file"),
     (["generate", "--ratio", "1"], "nslab generate", "needs a law")],
)
def test_bad_input_exits_2_with_one_line(capfd, argv_of, argv, prefix, match):
    code, out, err = run(capfd, *argv_of(argv))
    assert code == 2 and not out and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"{prefix}: error:") and match in err and "Traceback" not in err


def test_failed_notebook_exits_1_and_ctrl_c_130(capfd, monkeypatch):
    def fail(*args, **kwargs):
        raise NotebookFailed("03_budget_explorer.ipynb", 4, "ValueError: boom", Path("build/03.smoke.ipynb"))

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("nslab.reproduce.run_notebooks", fail)
    code, out, err = run(capfd, "reproduce", "--profile", "smoke", "--only", "03")  # 03 has no grid task
    assert code == 1 and not out and err.startswith("nslab reproduce: error: notebook 03_budget_explorer.ipynb")
    monkeypatch.setattr("nslab.scaling.latency.measure_latency", interrupt)
    code, out, err = run(capfd, "latency", "vgg11", "--ratio", "0.125")
    assert code == 130 and not out and err.startswith("nslab latency: interrupted")


def test_params(capfd):
    code, out, _ = run(capfd, "params", "vgg11", "--dataset", "cifar10", "--ratio", "0.25")
    assert code == 0 and json.loads(out) == {"arch": "vgg11", "dataset": "cifar10",
                                             "widths": [16, 32, 64, 64, 128, 128, 128, 128], "params": 579_786,
                                             "macs": 9_880_832}
    code, out, _ = run(capfd, "params", "resnet18", "--dataset", "cifar100")
    assert json.loads(out)["params"] == 11_218_340 and len(json.loads(out)["widths"]) == 17
    code, out, _ = run(capfd, "params", "mobilenetv2", "--dataset", "cifar100", "--convcut")
    assert json.loads(out)["params"] > 2_448_700
    assert json.loads(out)["macs"] == macs("mobilenetv2", None, "cifar100", convcut=True)


def test_fit_then_generate(capfd, tmp_path, ref_dir):
    fit = tmp_path / "fit.json"
    code, out, _ = run(capfd, "fit", ref_dir / "vgg_10_eff_c10_14.csv", "--arch", "vgg11", "--dataset", "cifar10",
                       "--out", fit)
    assert code == 0 and json.loads(out)["rows"] == 237 and json.loads(fit.read_text())["arch"] == "vgg11"
    code, out, _ = run(capfd, "generate", "--fit", fit, "--ratio", "0.25")
    g = json.loads(out)
    assert g["target"] == 579_786 and g["params"] == param_count("vgg11", g["widths"], "cifar10")
    code, out, _ = run(capfd, "generate", "--fit", fit, "--budget", "2e6", "--round-to", "8")
    assert all(w % 8 == 0 for w in json.loads(out)["widths"])


def test_generate_from_authors_file_and_published(capfd, ref_dir):
    _, a, _ = run(capfd, "generate", "--fit", ref_dir / "vgg_10_eff_c10.fits.json", "--arch", "vgg11",
                  "--dataset", "cifar10", "--iteration", "15", "--ratio", "0.25")
    code, b, _ = run(capfd, "generate", "--published", "vgg11-cifar10", "--ratio", "0.25")
    assert code == 0 and json.loads(a) == json.loads(b)
    target = param_count("vgg11", uniform_widths("vgg11", 2.0), "cifar10")
    code, c, _ = run(capfd, "generate", "--published", "vgg11-cifar10", "--budget", str(target), "--method", "sgd")
    assert code == 0 and json.loads(c)["target"] == target


def test_console_script_entry_point(tmp_path):
    # Through a real process, as a user calls it: JSON on stdout, errors on stderr with status 2.
    ok = subprocess.run([sys.executable, "-m", "nslab", "params", "vgg11"], capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["params"] == 9_231_114
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n")
    err = subprocess.run([sys.executable, "-m", "nslab", "fit", str(bad), "--arch", "vgg11"],
                         capture_output=True, text=True)
    assert err.returncode == 2 and err.stderr.startswith("nslab fit: error:") and not err.stdout


def test_generate_for_a_macs_budget(capfd):
    code, out, err = run(capfd, "generate", "--published", "vgg11-cifar10", "--macs-ratio", "0.25")
    obj = one_json_object(out)
    assert code == 0 and list(obj) == ["widths", "params", "macs", "target", "rel_error", "metric"], err
    assert obj["target"] == macs("vgg11", uniform_widths("vgg11", 0.25)) == 9_880_832 and obj["metric"] == "macs"
    assert obj["macs"] == macs("vgg11", obj["widths"]) and abs(obj["rel_error"]) <= 1e-3
    assert obj["params"] == param_count("vgg11", obj["widths"]) < 100_000
    code, out, _ = run(capfd, "generate", "--published", "vgg11-cifar10", "--macs", "2e7", "--round-to", "8")
    obj = one_json_object(out)
    assert obj["target"] == 20_000_000 and all(w % 8 == 0 for w in obj["widths"]) and abs(obj["rel_error"]) < 1e-3
    code, out, err = run(capfd, "generate", "--published", "vgg11-cifar10", "--macs", "1000")
    assert code == 2 and not out and "macs budget 1,000 is below the smallest" in err and "MACs for vgg11" in err
    code, out, err = run(capfd, "generate", "--published", "vgg11-cifar10", "--macs", "1e7", "--ratio", "1")
    assert code == 2 and "not allowed with argument" in err


def test_generate_for_a_latency_budget_uses_this_machines_table(capfd, monkeypatch, tmp_path):
    # a tiny budget: the error names the metric and the achievable range after timing only the smallest network
    monkeypatch.setenv("NSLAB_CACHE", str(tmp_path))
    code, out, err = run(capfd, "generate", "--published", "vgg11-cifar10", "--latency-ms", "1e-6")
    assert code == 2 and not out
    assert "latency budget 1e-06 ms" in err and "achievable range" in err and "vgg11 cifar10" in err


def test_generate_metric_flag_reads_the_registry(capfd):
    gen = ["generate", "--published", "vgg11-cifar10"]
    flags = (["--metric", "macs", "--ratio", "0.25"], ["--macs-ratio", "0.25"],
             ["--macs-ratio", "0.25", "--metric", "macs"])
    outs = [one_json_object(run(capfd, *gen, *f)[1]) for f in flags]
    assert outs[0] == outs[1] == outs[2] and outs[0]["target"] == 9_880_832 and outs[0]["metric"] == "macs"
    by_budget = one_json_object(run(capfd, *gen, "--metric", "macs", "--budget", "2e7")[1])
    assert by_budget == one_json_object(run(capfd, *gen, "--macs", "2e7")[1]) and by_budget["target"] == 20_000_000
    params = one_json_object(run(capfd, *gen, "--metric", "params", "--ratio", "0.25")[1])
    assert list(params) == GEN and params == one_json_object(run(capfd, *gen, "--ratio", "0.25")[1])
    code, out, err = run(capfd, *gen, "--macs", "2e7", "--metric", "latency")
    assert code == 2 and not out and "--macs is a macs budget: not one in --metric latency" in err
    code, out, err = run(capfd, *gen, "--metric", "flops", "--budget", "1")
    assert code == 2 and "invalid choice: 'flops'" in err
