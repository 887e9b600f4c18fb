"""Presets, paths and the papermill runner (failures name the notebook and the cell)."""

import json

import nbformat
import pytest

from nslab import config, reproduce
from nslab.cli import main as cli_main
from nslab.paths import paths


def write_nb(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('PROFILE = "smoke"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), params] + [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)


def test_presets():
    assert {"smoke", "cpu", "paper"} <= set(config.PRESETS)
    with pytest.raises(ValueError, match="accepted: smoke, cpu, .*paper"):
        config.preset("fast")
    cpu = config.preset("cpu")
    assert cpu.benchmark[0].arch == "vgg11" and cpu.benchmark[0].dataset == "cifar10"
    assert len(cpu.benchmark[0].seeds_at(0.25, "uniform")) >= 2  # at least two seeds at ratio 0.25
    assert {s.arch for s in cpu.pretrain} == {"vgg11", "mobilenetv2"}
    assert [s.arch for s in cpu.convcut] == ["mobilenetv2", "resnet18"]
    # the cpu search prunes a trained network on every training image; the studies stay cheap, without a floor
    main = cpu.search_for(cpu.descent)
    assert main.train_subset is None and main.prune.min_pretrain_accuracy == 65.0
    assert main.prune.batches_per_step > 1  # Taylor scores averaged over several minibatches
    study = cpu.search_for(cpu.pretrain[0], pretrain_epochs=0)
    assert study.train_subset == 1536 and study.prune.min_pretrain_accuracy is None
    assert study.prune.pretrain_epochs == 0
    t1 = cpu.benchmark[0]
    assert t1.seeds_at(0.25, "uniform") == t1.seeds_at(0.25, "neuralscale_last") == (0, 1)
    assert t1.seeds_at(0.25, "morphnet") == (0,) and "li" not in cpu.methods
    assert cpu.recipe_for(t1, "cifar").subset is None and cpu.recipe_for(cpu.pretrain[0], "cifar").subset == 5000
    assert config.preset("smoke").search_for(None).prune.min_pretrain_accuracy is None
    paper = config.preset("paper")
    assert {(s.arch, s.dataset) for s in paper.benchmark if s.table == 1} == {
        ("vgg11", "cifar10"), ("mobilenetv2", "cifar100"), ("resnet18", "tinyimagenet")}
    assert paper.benchmark[0].seeds == (0, 1, 2, 3, 4)


def test_paths_defaults(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.chdir(tmp_path / "notebooks")  # JupyterLab runs notebooks from notebooks/
    p = paths("cpu")
    assert p.figures == tmp_path / "figures" and p.results == tmp_path / "results" / "cpu"
    assert paths("smoke").figures == tmp_path / "build" / "smoke" / "figures"
    assert paths("cpu", "x", "y", "z").data_root.name == "z"


def test_list_notebooks_order_and_only(tmp_path):
    for n in ("02_b", "01_a", "10_c"):
        write_nb(tmp_path / f"{n}.ipynb", "x = 1")
    (tmp_path / "scratch.ipynb").write_text("{}")
    assert [p.stem for p in reproduce.list_notebooks(tmp_path)] == ["01_a", "02_b", "10_c"]
    assert [p.stem for p in reproduce.list_notebooks(tmp_path, ["2", "10"])] == ["02_b", "10_c"]
    with pytest.raises(ValueError, match="no notebook numbered 05"):
        reproduce.list_notebooks(tmp_path, ["05"])


def test_failure_names_the_notebook_and_the_cell(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_nb(nbs / "01_ok.ipynb", "x = PROFILE")
    write_nb(nbs / "02_bad.ipynb", "y = 1", "raise ValueError('boom ' + PROFILE)")
    write_nb(nbs / "03_never.ipynb", "z = 1")
    with pytest.raises(reproduce.NotebookFailed) as e:
        reproduce.run_notebooks("smoke", notebooks_dir=nbs, build_dir=tmp_path / "b", progress=False)
    err = e.value
    assert err.notebook == "02_bad.ipynb" and "ValueError: boom smoke" in str(err)
    assert err.cell == 4  # md, parameters, injected-parameters, "y = 1", the raise
    assert "02_bad.ipynb failed in cell 4" in str(err)
    assert (tmp_path / "b" / "01_ok.smoke.ipynb").exists() and not (tmp_path / "b" / "03_never.smoke.ipynb").exists()


def test_reproduce_turns_widgets_off_whatever_the_notebook_says(tmp_path):
    # JupyterLab autosaves: a notebook saved with INTERACTIVE = True must still run headless
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('PROFILE = "cpu"\nINTERACTIVE = True')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("assert INTERACTIVE is False, INTERACTIVE")]
    nbformat.write(nb, nbs / "01_saved_interactive.ipynb")
    done = reproduce.run_notebooks("smoke", notebooks_dir=nbs, build_dir=tmp_path / "b", progress=False)
    assert [d["notebook"] for d in done] == ["01_saved_interactive.ipynb"]


def test_cli_stdout_is_one_json_object(tmp_path, capsys):
    # progress goes to stderr: `nslab reproduce ... | jq` must keep working
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_nb(nbs / "01_ok.ipynb", "x = 1")
    assert cli_main(["reproduce", "--profile", "smoke", "--notebooks-dir", str(nbs),
                     "--build-dir", str(tmp_path / "b")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["notebooks"][0]["notebook"] == "01_ok.ipynb"
    assert "01_ok.ipynb: ok in" in err


def test_reproduce_without_a_browser_stops_before_computing_anything(tmp_path, monkeypatch, capsys):
    # Without Chromium the smoke grid used to run (~1 min; the cpu grid ~2 h) before the first figure failed.
    from nslab.runs import grid
    from nslab.views import figures

    monkeypatch.setattr(figures, "find_browser", lambda: None)
    monkeypatch.setattr(grid, "tasks", lambda *a, **k: pytest.fail("the grid was listed before the check"))
    res = tmp_path / "r"
    assert cli_main(["reproduce", "--profile", "smoke", "--results-dir", str(res),
                     "--figures-dir", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert "apt-get install -y chromium" in err and "--no-png" in err and "Nothing was computed" in err
    assert not res.exists()


def test_no_png_writes_html_only_and_reaches_the_kernels(tmp_path, monkeypatch):
    from nslab.views import figures

    monkeypatch.setattr(figures, "find_browser", lambda: None)  # --no-png needs no browser
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    out = tmp_path / "f"
    out.mkdir()
    (out / "nb01_x.png").write_bytes(b"an older figure")
    write_nb(nbs / "01_fig.ipynb", "import plotly.graph_objects as go\nfrom nslab.views import figures\n"
             f"saved = figures.save_figure(go.Figure(), 'nb01_x', {str(out)!r})\nassert set(saved) == {{'html'}}")
    done = reproduce.reproduce("smoke", notebooks_dir=nbs, build_dir=tmp_path / "b", progress=False, png=False)
    assert [d["notebook"] for d in done["notebooks"]] == ["01_fig.ipynb"]
    assert (out / "nb01_x.html").is_file() and not (out / "nb01_x.png").exists()  # no stale PNG beside it
    assert figures.png_enabled()  # the switch is restored in this process
