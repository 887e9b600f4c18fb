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
    "params": (["params", "vgg11", "--ratio", "0.125"], ["arch", "dataset", "widths", "params", "macs", "groups"]),
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
                                             "macs": 9_880_832, "groups": [f"conv{i}" for i in range(1, 9)]}
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


# ---- your own network: a factory string through params, search, generate --out and load_generated ----------------
# `usernet:small_cnn` is tests/usernet.py (importable: pytest puts tests/ on sys.path for its conftest.py), a user's
# 3-group residual CNN; `torchvision:resnet18` is traced from torchvision (no weights).

USER = "usernet:small_cnn"
USER_SEARCH = ["search", USER, "--profile", "smoke", "--iterations", "1", "--channels-per-step", "2", "--quiet"]


@pytest.fixture(autouse=True, scope="module")
def _registry_restored():
    # a factory string is registered when first resolved; later test modules (over ARCHS) must not see it
    from nslab.models import ARCHS, unregister

    before = set(ARCHS)
    yield
    for name in set(ARCHS) - before:
        unregister(name)


@pytest.fixture(scope="module")
def user_run(tmp_path_factory) -> Path:
    """A 1-iteration smoke search (synthetic data, 2 channels per step) of the user's CNN, shared."""
    out = tmp_path_factory.mktemp("user_search")
    assert main([*USER_SEARCH, "--out", str(out)]) == 0
    return out


def measured(model, size: int = 32) -> tuple[int, int]:
    """(parameters, MACs) counted on a built module: sum(numel) and FlopCounterMode's total / 2."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.eval()(torch.randn(1, 3, size, size))
    return sum(p.numel() for p in model.parameters()), fc.get_total_flops() // 2


def test_params_of_a_traced_torchvision_network(capfd):
    import torchvision

    from nslab.models import create_model

    code, out, err = run(capfd, "params", "torchvision:resnet18")
    obj = one_json_object(out)
    assert code == 0 and len(obj["groups"]) == len(obj["widths"]) == 12 and obj["groups"][0] == "conv1", err
    ref = torchvision.models.resnet18(num_classes=10)  # the default widths and K = 10 are torchvision's network
    assert (obj["params"], obj["macs"]) == measured(ref)
    widths = [8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96]
    code, out, _ = run(capfd, "params", "torchvision:resnet18", "--dataset", "cifar100", "--widths",
                       ",".join(map(str, widths)))
    obj = one_json_object(out)
    assert obj["widths"] == widths and (obj["params"], obj["macs"]) == measured(
        create_model("torchvision:resnet18", widths, "cifar100"))
    code, out, _ = run(capfd, "params", "torchvision:resnet18", "--dataset", "tinyimagenet", "--ratio", "0.5")
    obj = one_json_object(out)  # traced again at 64 px: the input size follows the dataset
    assert obj["macs"] == measured(create_model("torchvision:resnet18", obj["widths"], "tinyimagenet"), 64)[1]


def test_search_generate_and_load_a_users_network(capfd, user_run, tmp_path):
    import nslab

    settings = json.loads((user_run / "settings.json").read_text())
    assert settings["arch"] == USER and settings["search"]["prune"]["channels_per_step"] == 2
    assert (user_run / "iter_01" / "fit.json").is_file()
    out_file = tmp_path / "widths.json"
    code, out, err = run(capfd, "generate", "--run", user_run, "--budget", "30000", "--out", out_file)
    obj = one_json_object(out)
    assert code == 0 and obj["out"] == str(out_file) and abs(obj["rel_error"]) < 0.05, err
    rec = json.loads(out_file.read_text())
    assert rec["arch"] == rec["factory"] == USER and rec["input_size"] == [3, 32, 32] and rec["dataset"] == "cifar10"
    assert rec["groups"] == ["stem.0", "block.0", "head.1"] and rec["widths"] == obj["widths"]
    assert rec["iteration"] == 1 and rec["budget"]["target"] == 30000 and rec["budget"]["metric"] == "params"
    model = nslab.load_generated(out_file)  # a fresh process would re-trace the factory: unregister it first
    nslab.models.unregister(USER)
    model = nslab.load_generated(out_file)
    assert (rec["params"], rec["macs"]) == measured(model) and rec["params"] == obj["params"]
    assert [model.stem[0].out_channels, model.block[0].out_channels, model.fc.in_features] == rec["widths"]


def test_load_generated_refuses_a_changed_network(tmp_path):
    import nslab
    from nslab.generated import generated_record, write_generated

    path = write_generated(tmp_path / "w.json", generated_record(USER, "cifar100", [8, 16, 24], budget=None))
    assert nslab.load_generated(path).fc.out_features == 100
    rec = json.loads(path.read_text())
    path.write_text(json.dumps({**rec, "groups": ["stem.0", "block.1", "head.1"]}))
    with pytest.raises(ValueError, match=r"usernet:small_cnn now has 3 width groups, the file names 3; first "
                                         r"difference at entry 1: network 'block.0', file 'block.1'"):
        nslab.load_generated(path)
    path.write_text(json.dumps({**rec, "widths": [8, 16]}))
    with pytest.raises(ValueError, match="expected 3 widths, got 2"):
        nslab.load_generated(path)
    path.write_text(json.dumps({"widths": [8]}))
    with pytest.raises(ValueError, match=r"not a generated-widths file of format 1 \(missing \['arch', 'dataset', "
                                         r"'groups'\]"):
        nslab.load_generated(path)


def test_resolve_arch_names_what_it_accepts():
    from nslab.models import get_arch, resolve_arch

    assert resolve_arch("vgg11", "tinyimagenet") is get_arch("vgg11")
    a = resolve_arch(USER, "cifar10")
    assert resolve_arch(USER) is a and get_arch(USER) is a and a.variants == ("cifar",)
    with pytest.raises(ValueError, match=r"^unknown architecture 'vgg12'; accepted: a registered name \(vgg11, "
                                         r"resnet18, mobilenetv2.*or a factory 'torchvision:NAME', 'timm:NAME' or "
                                         r"'package.module:function'$"):
        resolve_arch("vgg12")


@pytest.mark.parametrize("argv,match", [
    (["params", "vgg12"], "unknown architecture 'vgg12'; accepted: a registered name (vgg11, resnet18"),
    (["params", "usernet:needs_an_argument"], "factory 'usernet:needs_an_argument' failed: TypeError"),
    (["params", "usernet:no_such_function"], "factory 'usernet:no_such_function': cannot import 'no_such_function'"),
    (["params", "usernet:Flat64"], "cannot take an input of size (3, 32, 32)"),
    (["params", USER, "--widths", "8,16"], "usernet:small_cnn: expected 3 widths, got 2: [8, 16]"),
    (["params", USER, "--widths", "8,0,16"], "widths must be positive integers, got [8, 0, 16]"),
    (["params", "torchvision:shufflenet_v2_x0_5"], "op 'view' in module 'stage2.0' makes a 5-D tensor"),
    (["search", "torchvision:shufflenet_v2_x0_5", "--profile", "smoke", "--out", "{tmp}/s"], "a channel shuffle"),
    (["generate", "--run", "{user_run}", "--budget", "10"], "params budget 10 is below the smallest network"),
    (["generate", "--run", "{user_run}", "--budget", "1e15"], "outside the achievable range"),
])
def test_a_users_bad_input_exits_2_with_one_line(capfd, tmp_path, argv, match, request):
    argv = [a.format(tmp=tmp_path, user_run=request.getfixturevalue("user_run") if "{user_run}" in a else "")
            for a in argv]
    code, out, err = run(capfd, *argv)
    assert code == 2 and not out and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"nslab {argv[0]}: error:") and match in err and "Traceback" not in err


def test_generate_out_never_damages_the_file_there(capfd, user_run, tmp_path):
    target = tmp_path / "widths.json"
    target.write_text("the user's earlier widths\n")
    code, out, err = run(capfd, "generate", "--run", user_run, "--budget", "10", "--out", target)
    assert code == 2 and not out and "below the smallest" in err
    folder = tmp_path / "a_folder"
    folder.mkdir()
    code, out, err = run(capfd, "generate", "--run", user_run, "--budget", "30000", "--out", folder)
    assert code == 2 and not out and err.startswith("nslab generate: error:") and str(folder) in err
    assert target.read_text() == "the user's earlier widths\n" and list(folder.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_folder", "widths.json"]  # no temp file left behind
