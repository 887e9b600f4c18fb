"""The notebooks: the committed ones are clean and follow the contract; all of them run under ``smoke``.

One papermill run of every notebook (shared by the tests below) writes into temporary folders; the tests
then check that each expected figure and table exists and that the tables hold the expected methods and
ratios. This is the slow part of the suite (a few minutes on 2 cores).
"""

import ast
import csv
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nslab import reproduce
from nslab.config import preset

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NAMES = ["01_iterative_pruning", "02_power_law", "03_budget_explorer", "04_architecture_descent",
         "05_benchmark", "06_pretraining_epochs", "07_convcut", "08_equal_compute", "09_your_network"]
DATA = Path(__file__).parent / "data"
FIG, TAB = ("html", "png"), ("csv", "md")
EXPECTED = {  # file stem -> extensions, per notebook
    "01": {"nb01_pruning_trajectory": FIG, "nb01_pruning_steps": TAB},
    "02": {"fig02_power_law": FIG, "fig02_power_law_fits": TAB},
    "03": {"nb03_budget_configurations": FIG + TAB},
    "04": {"fig03_descent_configurations": FIG + TAB, "nb04_convergence": FIG, "fig03_shape_agreement": TAB},
    "05": {"fig04_accuracy_vs_params_vgg11_cifar10": FIG, "fig05_accuracy_vs_latency_vgg11_cifar10": FIG,
           "fig04_accuracy_vs_params_resnet18_cifar10": FIG, "table1_benchmark": TAB,
           "table2_benchmark_more": TAB},
    "06": {"fig06_pretraining_configs_vgg11": FIG, "fig07_pretraining_accuracy_vgg11": FIG,
           "table3_pretraining_vgg11": TAB, "fig08_pretraining_configs_mobilenetv2": FIG,
           "fig09_pretraining_accuracy_mobilenetv2": FIG, "table4_pretraining_mobilenetv2": TAB},
    "07": {"fig10_convcut_mobilenetv2": FIG, "table5_convcut_mobilenetv2": TAB, "fig11_convcut_resnet18": FIG,
           "table6_convcut_resnet18": TAB},
    "08": {"nb08_equal_compute": FIG + TAB},
    "09": {"nb09_groups": TAB, "nb09_counts": TAB, "nb09_trajectory": FIG, "nb09_power_law": FIG,
           "nb09_configurations": FIG + TAB, "nb09_your_network": FIG + TAB},
}


def test_the_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == NAMES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_follows_the_contract(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    first, params, *rest = nb.cells
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "Writes" in first.source or "writes" in first.source
    assert params.cell_type == "code" and "parameters" in params.metadata.get("tags", [])
    tree = ast.parse(params.source)
    names = set()
    for stmt in tree.body:  # literals only
        assert isinstance(stmt, ast.Assign), ast.dump(stmt)
        ast.literal_eval(stmt.value)
        names |= {t.id for t in stmt.targets}
    assert {"PROFILE", "DATA_ROOT", "RESULTS_DIR", "FIGURES_DIR", "INTERACTIVE"} <= names
    ns = {}
    exec(params.source, ns)
    assert ns["PROFILE"] == "cpu" and ns["INTERACTIVE"] is False  # the README's default
    for cell in [params, *rest]:
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [] and cell.execution_count is None
        tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
            if isinstance(node, ast.Constant) and isinstance(node.value, str):  # no path literals
                assert "/" not in node.value and not node.value.endswith((".csv", ".json", ".ipynb", ".png"))
        assert "sys.path" not in cell.source
        for imp in (n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))):
            mods = [a.name for a in imp.names] if isinstance(imp, ast.Import) else [imp.module]
            assert all(m == "nslab" or m.startswith("nslab.") for m in mods), mods
        guarded = set()  # widgets only under the INTERACTIVE switch (an if statement or expression)
        for node in ast.walk(tree):
            if isinstance(node, (ast.If, ast.IfExp)) and "INTERACTIVE" in ast.unparse(node.test):
                guarded |= {id(n) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name == "display" or name.endswith("widget"):
                    assert id(node) in guarded, f"{path.name}: {name}() outside 'if INTERACTIVE'"


@pytest.fixture(scope="module")
def smoke(smoke_reproduction):
    out, report = smoke_reproduction  # nslab reproduce --profile smoke: the grid, then every notebook
    assert report["grid"]["failed"] == {} and report["grid"]["tasks"] > 0
    return out, report["notebooks"]


def test_every_notebook_runs_under_smoke(smoke):
    out, done = smoke
    assert [d["notebook"] for d in done] == [n + ".ipynb" for n in NAMES]
    for d in done:
        nb = nbformat.read(d["executed"], as_version=4)
        assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.parametrize("number", sorted(EXPECTED))
def test_expected_figures_and_tables_exist(smoke, number):
    figs = smoke[0] / "figures"
    for stem, exts in EXPECTED[number].items():
        for ext in exts:
            f = figs / f"{stem}.{ext}"
            assert f.is_file() and f.stat().st_size > 0, f"notebook {number} did not write {f.name}"
    for png in figs.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def rows(smoke, stem):
    with open(smoke[0] / "figures" / f"{stem}.csv") as f:
        return list(csv.DictReader(f))


def test_table1_holds_every_method_and_ratio(smoke):
    t = rows(smoke, "table1_benchmark")
    got = {(r["method"], float(r["ratio"])) for r in t}
    want = {(m, r) for m in ("uniform", "morphnet", "neuralscale_it1", "neuralscale_last") for r in (0.25, 0.75)}
    assert want | {("li", 0.75)} == got
    two_seeds = [r for r in t if float(r["ratio"]) == 0.25]
    assert all(r["n_seeds"] == "2" for r in two_seeds)
    iterations = preset("smoke").search.iterations
    assert {r["label"] for r in t if r["method"] == "neuralscale_last"} == {f"NeuralScale (Iteration = {iterations})"}
    # smoke's VGG11 is at 1/8 width: not the paper's parameter count, so no paper value beside it
    assert all(r["paper_accuracy"] == r["paper_params_m"] == r["paper_latency_ms"] == "" for r in t)
    paper = {r["method"]: r["paper_setting"] for r in t if float(r["ratio"]) == 0.25}
    assert paper["uniform"] == "vgg11 cifar10, 0.58M params, 88.18 ± 0.16%"
    assert paper["neuralscale_last"] == "vgg11 cifar10, NeuralScale (Iteration = 15), 0.58M params, 91.22 ± 0.15%"
    for r in t:
        assert float(r["macs_m"]) > 0 and float(r["train_min"]) >= 0 and float(r["latency_x"]) > 0  # smoke: < 1 s
    assert {float(r["latency_x"]) for r in t if r["method"] == "uniform"} == {1.0}
    md = (smoke[0] / "figures" / "table1_benchmark.md").read_text()
    assert "| setting | label | ratio | params_m | paper_params_m | macs_m |" in md and "Uniform Scale" in md
    assert "train_min" in md and "paper_setting" in md and "smoke profile: vgg11 cifar10, 1 epoch on 64" in md
    fig5 = (smoke[0] / "figures" / "fig05_accuracy_vs_latency_vgg11_cifar10.html").read_text()
    assert "latency relative to uniform at the same budget (x)" in fig5 and "ms per batch" not in fig5


def test_table2_3_4_5_6_hold_their_methods(smoke):
    t2 = rows(smoke, "table2_benchmark_more")
    assert {r["method"] for r in t2} == {"uniform", "neuralscale_it1", "neuralscale_last"}
    # resnet18 on cifar10 stands in for the paper's cifar100: never compared (named where the paper has the ratio)
    assert all(r["paper_accuracy"] == "" for r in t2)
    assert all(r["paper_setting"].startswith("resnet18 cifar100") for r in t2 if r["paper_setting"])
    t3 = rows(smoke, "table3_pretraining_vgg11")
    assert {(r["method"], r["pretrain_epochs"]) for r in t3} == {
        ("uniform", ""), ("neuralscale_last", "0"), ("neuralscale_last", "1")}
    assert {r["method"] for r in rows(smoke, "table4_pretraining_mobilenetv2")} == {"uniform", "neuralscale_last"}
    one = preset("smoke").study_iterations == 1  # then the last iteration is iteration 1's network: not run twice
    for stem in ("table5_convcut_mobilenetv2", "table6_convcut_resnet18"):
        t = rows(smoke, stem)
        assert {r["method"] for r in t} == {"uniform", "morphnet", "uniform_convcut", "neuralscale_it1"} | (
            set() if one else {"neuralscale_last"})
        assert all(r["paper_accuracy"] == "" and "tinyimagenet" in r["paper_setting"] for r in t if r["paper_setting"])
    for stem in ("table3_pretraining_vgg11", "table4_pretraining_mobilenetv2", "table5_convcut_mobilenetv2",
                 "table6_convcut_resnet18"):
        assert "(smoke profile: " in (smoke[0] / "figures" / f"{stem}.md").read_text()
    fits = rows(smoke, "fig02_power_law_fits")
    assert {r["run"].split(":")[0] for r in fits} == {"this project", "authors"}  # AUTHORS_DIR was used


def test_rerun_reuses_cached_results(smoke):
    out, _ = smoke
    runs = sorted((out / "results" / "runs").glob("*.json"))
    before = {p: p.stat().st_mtime_ns for p in runs}
    reproduce.run_notebooks("smoke", only=["05"], build_dir=out / "build", figures_dir=out / "figures",
                            results_dir=out / "results", progress=False)
    assert {p: p.stat().st_mtime_ns for p in runs} == before  # nothing recomputed


def test_a_notebook_runs_alone_with_papermill(tmp_path):
    nb = ROOT / "notebooks" / "03_budget_explorer.ipynb"
    r = subprocess.run([sys.executable, "-m", "papermill", str(nb), str(tmp_path / "out.ipynb"), "-p", "PROFILE",
                        "smoke", "-p", "FIGURES_DIR", str(tmp_path / "f"), "-p", "RESULTS_DIR", str(tmp_path / "r"),
                        "--no-progress-bar"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "f" / "nb03_budget_configurations.csv").is_file()


def test_every_notebook_ends_with_a_computed_conclusion(smoke):
    _, done = smoke
    for d in done:
        nb = nbformat.read(d["executed"], as_version=4)
        last = nb.cells[-1]
        assert last.cell_type == "code" and last.source.startswith("conclusions."), d["notebook"]
        md = [o["data"]["text/markdown"] for o in last.outputs if "text/markdown" in o.get("data", {})]
        assert md and md[0].startswith("- ") and any(ch.isdigit() for ch in md[0]), d["notebook"]
    for path in NOTEBOOKS:  # and each teaches its algorithm with equations (LaTeX) right after its imports
        method = nbformat.read(path, as_version=4).cells[3]
        assert method.cell_type == "markdown" and method.source.count("$") >= 4 and "\\" in method.source, path.name


def test_equal_compute_table_holds_the_macs_budget(smoke):
    t = rows(smoke, "nb08_equal_compute")
    assert {(r["method"], r["budget"]) for r in t} == {("uniform", "macs"), ("morphnet", "macs"),
                                                        ("neuralscale_last", "macs"), ("neuralscale_last", "params")}
    uniform = next(r for r in t if r["method"] == "uniform")
    for r in t:
        held = "macs_m" if r["budget"] == "macs" else "params_m"
        assert abs(float(r[held]) / float(uniform[held]) - 1) < 0.01, r  # the table rounds to 3-4 digits
    assert "equal MACs" in next(r["label"] for r in t if r["method"] == "morphnet")


def test_your_network_notebook_shows_the_traced_groups_exact_counts_and_both_budgets(smoke):
    s = preset("smoke").your_network
    groups = rows(smoke, "nb09_groups")
    assert [r["group"] for r in groups][:2] == ["conv1", "layer1.0.conv1"] and len(groups) == 12  # ResNet18's
    counts = rows(smoke, "nb09_counts")
    assert len(counts) == 4 and all(r["exact"] == "True" for r in counts)
    assert all(r["params"] == r["params_built"] and r["macs"] == r["macs_built"] for r in counts)
    t = rows(smoke, "nb09_your_network")
    assert {(r["method"], r["budget"]) for r in t} == {("uniform", "macs"), ("neuralscale_last", "macs"),
                                                        ("neuralscale_last", "params")}
    uniform = next(r for r in t if r["method"] == "uniform")
    for r in t:
        held = "macs_m" if r["budget"] == "macs" else "params_m"
        assert abs(float(r[held]) / float(uniform[held]) - 1) < 0.01, r
        assert float(r["ratio"]) == s.ratios[0]  # 0.125 printed as 0.125, not rounded to 0.12
    configs = rows(smoke, "nb09_configurations")
    assert {r["method"] for r in configs} == {"uniform", "morphnet", "neuralscale"}
