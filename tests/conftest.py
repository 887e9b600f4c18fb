from pathlib import Path

import pytest
import torch

from nslab import io
from nslab.models import param_count
from nslab.scaling import powerlaw, solver

DATA = Path(__file__).parent / "data"
ONE_WORKER = "one_worker"  # the xdist group whose tests run one after another on one worker


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items):
    # Under pytest-xdist (the README's `-n 2 --dist loadgroup`), every test that reads the shared smoke reproduction
    # runs on one worker, so that the reproduction (the suite's slowest part) runs once, not once per worker. The
    # Ray tests join the same group by name (tests/test_grid.py): each counts the machine's Ray processes.
    for item in items:
        if "smoke_reproduction" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(ONE_WORKER))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The tests' networks are tiny: a second OpenMP thread only adds synchronisation, and when anything
    # else runs on the 2 cores it spins (up to 10x slower, measured here).
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smoke_reproduction(tmp_path_factory) -> tuple[Path, dict]:
    """One ``nslab reproduce --profile smoke`` (the grid in process, then every notebook) into a temporary
    folder, shared by the notebook tests and the Ray executor's (its in-process reference): the slowest
    part of the suite, run once. Returns ``(folder, report)`` with ``build/``, ``figures/``, ``results/``."""
    from nslab import reproduce

    out = tmp_path_factory.mktemp("smoke")
    report = reproduce.reproduce("smoke", build_dir=out / "build", figures_dir=out / "figures",
                                 results_dir=out / "results", parameters={"AUTHORS_DIR": str(DATA)}, progress=False)
    return out, report


@pytest.fixture
def ref_dir() -> Path:
    """The authors' reference trajectories and fits copied into tests/data (MIT, see LICENSE there)."""
    return DATA


def write_authors_run(root: Path, ref_dir: Path, name: str, **summary) -> Path:
    """A search run directory as architecture descent writes it, from the authors' iteration-1 trajectory.

    ``summary``: extra keys of iteration 1's ``summary.json``. Returns the run directory.
    """
    run = root / "descent" / name
    w = io.read_trajectory(ref_dir / "vgg_10_eff_c10_1.csv")
    law = powerlaw.fit_power_law(w, "vgg11", "cifar10")
    io.write_json(run / "settings.json", {"arch": "vgg11", "dataset": "cifar10", "convcut": False,
                                          "search": {"start_ratio": 1.0}})
    io.write_trajectory(run / "iter_01" / "trajectory.csv", w, [param_count("vgg11", r) for r in w.tolist()])
    powerlaw.save_fit(run / "iter_01" / "fit.json", law, arch="vgg11", dataset="cifar10", iteration=1)
    gen = solver.widths_for_budget(law, "vgg11", "cifar10", 9_231_114)
    io.write_json(run / "iter_01" / "summary.json", {
        "start_widths": [64, 128, 256, 256, 512, 512, 512, 512], "change_from_previous": 0.1, **summary,
        "generated": {"widths": gen.widths, "params": gen.params, "target": gen.target, "rel_error": gen.rel_error}})
    return run
