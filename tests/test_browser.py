"""Notebooks 03 and 04 as a researcher meets them: JupyterLab in a real browser (the system Chromium,
driven by Playwright's Python package), ``INTERACTIVE = True``, Run All from the Run menu, then the
keyboard on the sliders. The browser plumbing is ``bench/slider_browser.py``'s (which times 20 moves)."""

import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("playwright")
pytest.importorskip("anywidget")
if not (shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")):
    pytest.skip("no Chromium on PATH (.ci/run installs it)", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import slider_browser as sb  # noqa: E402


@pytest.fixture(scope="module")
def lab(tmp_path_factory, smoke_reproduction):
    folder = tmp_path_factory.mktemp("lab")
    # a copy of the smoke reproduction's results: notebook 04 finds its descent there (the search is the notebook
    # tests' concern; this one is the browser's), and the shared folder stays as those tests read it
    shutil.copytree(smoke_reproduction[0] / "results", folder / "results")
    params = {"PROFILE": "smoke", "INTERACTIVE": True, "RESULTS_DIR": str(folder / "results"),
              "FIGURES_DIR": str(folder / "figures")}
    for nb in ("03_budget_explorer.ipynb", "04_architecture_descent.ipynb"):
        sb.prepare(nb, folder, params)
    with sb.jupyterlab(folder) as server, sb.browser() as page:
        yield server, page, folder


def test_budget_slider_redraws_the_figure_on_every_key(lab, record_property):
    server, page, folder = lab
    sb.open_and_run_all(page, server, "03_budget_explorer.ipynb")
    before = page.locator(sb.EXPLORER_PLOT).first.locator(".gtitle").first.text_content()
    assert "iteration 15" in before  # it opens on the parameters cell's FIT, not on the first fit listed
    res = sb.press(page, sb.EXPLORER_PLOT, sb.EXPLORER_HANDLE, ["ArrowLeft"] * 4)
    titles = [r["title"] for r in res]
    assert len(set(titles)) == 4 and before not in titles  # every key: a new budget drawn
    assert all("M params" in t or "k params" in t for t in titles)  # human units, not 9.22e+6
    ms = [r["ms"] for r in res]
    record_property("slider_ms", ms)
    print(f"slider key-to-redraw ms: {ms}")
    assert all(m > 0 for m in ms)
    # the conclusion cell rendered its computed Markdown
    assert page.locator(".jp-RenderedMarkdown:has-text('multiply-accumulates')").count() == 1


def test_descent_view_replays_iterations_on_fixed_axes(lab):
    server, page, folder = lab
    sb.open_and_run_all(page, server, "04_architecture_descent.ipynb", timeout=400)
    plot = page.locator(sb.EXPLORER_PLOT).first
    page.wait_for_function("() => /iteration 2/.test(document.querySelector("
                           f"'{sb.EXPLORER_PLOT} .gtitle')?.textContent || '')", timeout=30_000)
    axes = plot.locator(".xtick").all_text_contents()
    res = sb.press(page, sb.EXPLORER_PLOT, sb.EXPLORER_HANDLE, ["ArrowLeft", "ArrowRight"])
    assert "iteration 1" in res[0]["title"] and "iteration 2" in res[1]["title"]
    assert plot.locator(".xtick").all_text_contents() == axes  # the axes did not move between iterations
    page.locator(".widget-vbox").first.screenshot(path=str(folder / "descent_view.png"))
