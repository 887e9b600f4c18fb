"""The live / replay view of a search (notebooks 01 and 04): frames, fixed axes, live redraws."""

import pytest
from conftest import write_authors_run

from nslab.search.descent import load_run
from nslab.views.live import DescentView

pytest.importorskip("anywidget")  # go.FigureWidget


@pytest.fixture
def run(tmp_path, ref_dir):
    return load_run(write_authors_run(tmp_path, ref_dir, "vgg11_cifar10_authors", seconds=1.0))


def _view(run):
    return DescentView(run.arch, run.dataset, run.iterations[0].start, title="t", min_interval=0.0)


def test_replay_by_rows_grows_the_trajectory_with_fixed_axes(run):
    view = _view(run)
    axes = (view.fig.layout.xaxis.range, view.fig.layout.yaxis.range, view.fig.layout.yaxis2.range)
    view.replay(run, by="rows", frames=10, autoplay=False)
    assert view.frame.max == len(view._frames) - 1 >= 5
    seen = []
    for i in range(view.frame.max + 1):
        view.frame.value = i
        seen.append(len(view.fig.data[0].x))
        assert (view.fig.layout.xaxis.range, view.fig.layout.yaxis.range, view.fig.layout.yaxis2.range) == axes
    assert seen == sorted(seen) and seen[-1] == len(run.iterations[0].params) and seen[0] < seen[-1]
    # the last frame draws the iteration's own generated widths and its fit
    n = len(run.iterations[0].start)
    assert list(view.fig.data[2 * n + 1].y) == list(run.iterations[0].generated.widths)
    assert len(view.fig.data[n].x) > 0
    # every row inside the fixed axes
    x0, x1 = view.fig.layout.xaxis.range
    assert 10 ** x0 <= min(run.iterations[0].params) and max(run.iterations[0].params) <= 10 ** x1


def test_live_rows_fit_and_generate_once_enough_rows_arrived(run):
    view = _view(run)
    it = run.iterations[0]
    n = len(it.start)
    view.on_row(1, it.widths[:3], it.params[:3])
    assert len(view.fig.data[n].x) == 0 and len(view.fig.data[2 * n + 1].y) == 0  # too few rows to fit
    view.on_row(1, it.widths, it.params)
    gen = list(view.fig.data[2 * n + 1].y)
    assert gen == list(it.generated.widths)  # the same rows, the same fit, the same solver
    view.on_row(2, it.widths[:2], it.params[:2])  # iteration 2 starts: iteration 1's line goes grey
    assert [y for y in view.fig.data[2 * n].y if y is not None] == gen
    assert "iteration 2" in view.fig.layout.title.text


def test_live_redraws_are_throttled(run):
    view = DescentView(run.arch, run.dataset, run.iterations[0].start, min_interval=60.0)
    it = run.iterations[0]
    view.on_row(1, it.widths[:10], it.params[:10])
    view.on_row(1, it.widths, it.params)  # within a minute of the first: not drawn
    assert len(view.fig.data[0].x) == 10


def test_replay_rejects_an_unknown_mode(run):
    with pytest.raises(ValueError, match="'iterations' or 'rows'"):
        _view(run).replay(run, by="epochs")
