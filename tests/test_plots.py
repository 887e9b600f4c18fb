"""Figure builders (readable: titles, axis titles, legends), the save helper, and the budget slider's callback."""

import dataclasses

import numpy as np
import plotly.graph_objects as go
import pytest
from conftest import write_authors_run

from nslab import io
from nslab.models import macs, param_count, uniform_widths
from nslab.scaling import powerlaw
from nslab.scaling.methods import morphnet_base
from nslab.views import explorer, figures, plots
from nslab.views import tables as results


def assert_readable(fig):
    assert isinstance(fig, go.Figure)
    assert fig.layout.title.text
    xt = [fig.layout[k].title.text for k in fig.layout if k.startswith("xaxis")]
    yt = [fig.layout[k].title.text for k in fig.layout if k.startswith("yaxis")]
    assert xt and all(xt) and yt and all(yt)
    assert any("(" in t for t in xt + yt)  # units in parentheses
    assert any(t.name for t in fig.data)


def test_power_law_figure_has_fits_and_r2(ref_dir):
    w = powerlaw.io.read_trajectory(ref_dir / "vgg_10_eff_c10_0.csv")
    params = np.array([param_count("vgg11", r.tolist()) for r in w])
    law = powerlaw.fit_power_law(w, "vgg11")
    fig = plots.power_law_figure([plots.PowerLawPanel("authors", w, params, law)] * 2)
    assert_readable(fig)
    names = [t.name for t in fig.data if t.mode == "lines"]
    assert len(names) == 16 and all("R²=" in n for n in names)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert fig.layout.legend2  # one legend per panel
    with pytest.raises(ValueError):
        plots.power_law_figure([])


def test_trajectory_and_configuration_figures():
    w = np.array([[10, 20], [9, 18], [8, 15]])
    fig = plots.trajectory_figure(w, [300, 250, 200])
    assert_readable(fig)
    assert len(fig.data) == 2 and list(fig.data[1].y) == [20, 18, 15]
    fig = plots.configurations_figure({"r = 0.25": {"iteration 1": [1, 2], "iteration 2": [2, 3]},
                                       "r = 2": {"iteration 1": [5, 6], "iteration 2": [6, 7]}},
                                      title="t", gradient=True)
    assert_readable(fig)
    assert len(fig.data) == 4 and sum(t.showlegend for t in fig.data) == 2
    assert_readable(plots.convergence_figure({"r = 0.25": [5.0, 1.0]}))


def test_configurations_figure_draws_reference_as_hollow_markers():
    # Figure 3: the authors' published configuration per panel beside this run's iterations
    panels = {"r = 0.25": {"iteration 1": [1, 2], "iteration 2": [2, 3]},
              "r = 2": {"iteration 1": [5, 6], "iteration 2": [6, 7]}}
    fig = plots.configurations_figure(panels, title="t", gradient=True, reference={"r = 0.25": [3, 4], "r = 2": [8, 9]},
                                      reference_name="authors' iteration 1")
    assert_readable(fig)
    hollow = [t for t in fig.data if t.marker.symbol and t.marker.symbol.endswith("-open")]
    assert [list(t.y) for t in hollow] == [[3, 4], [8, 9]] and all(t.mode == "markers" for t in hollow)
    assert {t.name for t in hollow} == {"authors' iteration 1"} and sum(t.showlegend for t in hollow) == 1
    assert len(fig.data) == 6 and "hollow" in fig.layout.legend.title.text
    # several references per panel (the authors' iterations 1 and 15), each its own symbol; panels may lack one
    fig = plots.configurations_figure(panels, title="t", reference={"r = 2": {"it 1": [8, 9], "it 15": [7, 9]}})
    hollow = [t for t in fig.data if str(t.marker.symbol).endswith("-open")]
    assert [(t.name, list(t.y)) for t in hollow] == [("it 1", [8, 9]), ("it 15", [7, 9])]
    assert hollow[0].marker.symbol != hollow[1].marker.symbol
    # without a reference: unchanged
    assert not any(str(t.marker.symbol).endswith("-open") for t in plots.configurations_figure(panels, "t").data)
    with pytest.raises(ValueError, match="not among"):
        plots.configurations_figure(panels, "t", reference={"r = 9": [1, 2]})
    with pytest.raises(ValueError, match="layers"):
        plots.configurations_figure(panels, "t", reference={"r = 2": [1, 2, 3]})


def test_accuracy_figure_with_error_bars_and_paper_overlay():
    summary = [{"method": "uniform", "ratio": r, "params": p, "latency_ms": 1.0 + r, "acc_mean": 80 + r,
                "acc_std": 0.3, "n": 2} for r, p in ((0.25, 5.8e5), (0.75, 5.2e6))]
    paper = results.paper_results(table=1, arch="vgg11", dataset="cifar10", method="uniform")
    for x, rows, ref in (("params", summary, paper),
                         ("latency_x", results.latency_ratios(summary), results.latency_ratios(paper))):
        fig = plots.accuracy_figure(rows, x, title="Figure 4", paper=ref, labels=results.METHOD_LABELS)
        assert_readable(fig)
        ours, theirs = fig.data
        assert list(ours.error_y.array) == [0.3, 0.3] and ours.name == "Uniform Scale (Baseline)"
        assert theirs.name.startswith("paper:") and theirs.marker.symbol.endswith("-open")
        assert ours.line.color == theirs.marker.color
    assert plots.accuracy_figure(summary, "params").layout.xaxis.type == "log"
    with pytest.raises(ValueError):
        plots.accuracy_figure(summary, "flops")


def test_latency_figure_plots_the_ratio_to_uniform_never_two_machines_milliseconds():
    summary = [{"method": m, "ratio": 0.25, "params": 5.8e5, "latency_ms": lat, "acc_mean": 80.0, "acc_std": 0.3,
                "n": 2, "device": "cpu"} for m, lat in (("uniform", 2.0), ("neuralscale_it1", 5.0))]
    paper = results.paper_results(table=1, arch="vgg11", dataset="cifar10")
    paper = [r for r in paper if r["ratio"] == 0.25 and r["method"] in ("uniform", "neuralscale_it1")]
    fig = plots.accuracy_figure(results.latency_ratios(summary), "latency_x", paper=results.latency_ratios(paper))
    assert fig.layout.xaxis.title.text == "latency relative to uniform at the same budget (x)"
    xs = {t.name: list(t.x) for t in fig.data}
    assert xs["neuralscale_it1"] == [2.5] and xs["uniform"] == [1.0]
    want = round(next(r["latency_ms"] for r in paper if r["method"] == "neuralscale_it1") / paper[0]["latency_ms"], 3)
    assert xs["paper: neuralscale_it1"] == [want]  # the paper's own ratio, from its GTX 1080 Ti rows
    with pytest.raises(ValueError, match="GTX 1080 Ti"):
        plots.accuracy_figure(summary, "latency", paper=paper)  # milliseconds of two machines on one axis
    assert "this machine" in plots.accuracy_figure(summary, "latency").layout.xaxis.title.text


def test_check_name():
    for ok in ("fig02_power_law", "fig11_convcut_resnet18", "table1_benchmark", "nb03_budget_configurations"):
        assert figures.check_name(ok) == ok
    for bad in ("fig1_x", "fig12_x", "table7_x", "fig02", "fig02_Power", "figure2_x", "fig02_a-b"):
        with pytest.raises(ValueError, match="bad output name"):
            figures.check_name(bad)


def test_save_figure_and_table(tmp_path):
    fig = plots.convergence_figure({"r = 0.25": [3.0, 1.0]})
    out = figures.save_figure(fig, "nb04_convergence", tmp_path)
    assert out["png"].read_bytes()[:4] == b"\x89PNG"
    html = out["html"].read_text()
    assert "plotly.min.js" in html and (tmp_path / "plotly.min.js").stat().st_size > 100_000
    rows = [{"method": "uniform", "ratio": 0.25, "accuracy": "88.18 ± 0.16", "widths": [1, 2]},
            {"method": "morphnet", "ratio": 0.25, "accuracy": "90.60 ± 0.11", "extra": 1.5}]
    t = figures.save_table(rows, "table1_benchmark", tmp_path, columns=("method", "ratio", "accuracy"), title="T1")
    csv_lines = t["csv"].read_text().splitlines()
    assert csv_lines[0] == "method,ratio,accuracy,widths,extra" and csv_lines[1] == "uniform,0.25,88.18 ± 0.16,1 2,"
    md = t["md"].read_text()
    assert md.startswith("### T1") and "| method | ratio | accuracy |" in md and "| morphnet | 0.25 |" in md
    with pytest.raises(ValueError, match="no rows"):
        figures.save_table([], "table1_benchmark", tmp_path)
    assert not list(tmp_path.glob(".*tmp"))


def test_missing_browser_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "find_browser", lambda: None)
    with pytest.raises(figures.FigureExportError, match="apt-get install -y chromium"):
        figures.save_figure(plots.convergence_figure({"a": [1.0]}), "nb04_convergence", tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written


# --- the budget slider ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fit():
    return explorer.published("vgg11-cifar10", 15)


def test_slider_callback_output_for_a_budget(fit):
    fig = explorer.figure(fit, "cifar10", 9_231_114)
    configs = explorer.on_budget(fig, fit, "cifar10", 1_000_000)
    assert list(configs) == ["uniform", "morphnet", "neuralscale"]
    ns = configs["neuralscale"]
    assert ns.widths == [105, 165, 179, 167, 114, 78, 41, 62] and ns.params == 1_000_005
    for s in configs.values():
        assert abs(s.rel_error) < 1e-3 and s.params == param_count("vgg11", s.widths, "cifar10")
    assert configs["uniform"].widths == [20, 42, 84, 84, 168, 169, 168, 168]  # proportional to the default
    assert list(fig.data[2].y) == ns.widths and "1.00M params · " in fig.data[2].name
    assert "1.00M params, 0.11x default" in fig.layout.title.text
    assert "uniform — 1.00M params" in fig.data[0].name  # 999,992 parameters


def test_slider_range_and_ratio_table(fit):
    lo, default, hi = explorer.budget_range("vgg11", "cifar10")
    assert lo < default / 50 and hi == 2 * default == 18_462_228
    for b in (lo, hi):
        assert all(abs(s.rel_error) < 0.01 for s in explorer.configurations(fit, "cifar10", b).values())
    rows, panels = explorer.ratio_table(fit, "cifar10", [0.25, 2.0])
    u = [r for r in rows if r["method"] == "uniform"]
    assert [r["widths"] for r in u] == [uniform_widths("vgg11", 0.25), uniform_widths("vgg11", 2.0)]
    assert len(panels) == 2 and all(set(p) == {"uniform", "morphnet", "neuralscale"} for p in panels.values())


def test_morphnet_base_keeps_half_the_channels(fit):
    assert sum(fit.morphnet_base) == pytest.approx(0.5 * 2752, rel=0.01)
    with pytest.raises(ValueError):
        morphnet_base(dataclasses.replace(fit.context, morphnet_keep=0))


def test_available_fits_finds_project_searches(tmp_path, fit, ref_dir):
    w = io.read_trajectory(ref_dir / "vgg_10_eff_c10_1.csv")
    law = powerlaw.fit_power_law(w, "vgg11", "cifar10")
    write_authors_run(tmp_path, ref_dir, "vgg11_cifar10_pe10_abc")
    fits = explorer.available_fits([tmp_path])
    assert "authors: vgg11-cifar100, iteration 1" in fits
    mine = fits["this project: vgg11_cifar10_pe10_abc, iteration 1"]
    assert mine.law == law and mine.context.morphnet_widths is None  # this run kept no half point
    assert sum(morphnet_base(mine.context)) == pytest.approx(0.5 * 2752, rel=0.01)  # so the law's point
    kept = [32, 64, 128, 128, 256, 256, 256, 256]
    write_authors_run(tmp_path / "kept", ref_dir, "vgg11_cifar10_pe10_kept", at_half=kept)
    assert morphnet_base(explorer.available_fits([tmp_path / "kept"])[
        "this project: vgg11_cifar10_pe10_kept, iteration 1"].context) == kept


def test_explorer_widget_opens_on_the_named_fit_with_human_readouts(fit):
    other = explorer.published("vgg11-cifar10", 1)
    box = explorer.explorer_widget({other.name: other, fit.name: fit}, fit=fit.name)
    assert box.children[1].value == fit.name  # not the first of the list
    slider, shown = box.children[3].children
    slider.value = 9_231_114
    assert shown.value == "<b>9.23M params, 1.00x default</b>"
    status = box.children[4].value
    assert "<b>neuralscale</b> 9.23M params · 51.1M MACs" not in status  # 51.1M is r = 0.25's, not r = 1's
    assert "neuralscale" in status and "M params · " in status and "M MACs (" in status
    fig = box.children[5]
    assert fig.layout.title.text.startswith("vgg11 cifar10 at 9.23M params") and fit.name in fig.layout.title.text
    with pytest.raises(ValueError, match="not available"):
        explorer.explorer_widget({fit.name: fit}, fit="authors: nothing")


def test_explorer_switches_the_budget_to_macs(fit):
    box = explorer.explorer_widget({fit.name: fit}, fit=fit.name)
    box.children[2].value = "macs"
    slider, shown = box.children[3].children
    lo, default, hi = explorer.budget_range("vgg11", "cifar10", "macs")
    assert slider.value == pytest.approx(default) and shown.value.endswith("MACs, 1.00x default</b>")
    slider.value = macs("vgg11", uniform_widths("vgg11", 0.25))
    configs = explorer.configurations(fit, "cifar10", slider.value, metric="macs")
    assert all(abs(s.rel_error) < 1e-3 and s.metric == "macs" for s in configs.values())
    assert configs["neuralscale"].params < configs["uniform"].params  # equal compute, fewer parameters
    assert list(box.children[5].data[2].y) == configs["neuralscale"].widths


def test_human_units():
    assert [explorer.human(n) for n in (912, 579_786, 9_231_114, 2.5e9)] == ["912", "580k", "9.23M", "2.50G"]


def test_long_titles_wrap_and_get_room():
    fig = plots.convergence_figure({"r = 1": [1.0, 0.5]}, title="word " * 40)
    lines = fig.layout.title.text.split("<br>")
    assert len(lines) == 3 and all(len(line) <= plots.TITLE_CHARS for line in lines)
    assert fig.layout.margin.t >= 50 + 22 * 2

