"""Key-to-redraw latency of notebook 03's budget slider in a real browser (JupyterLab + Chromium).

Usage: ``python bench/slider_browser.py [--moves 20] [--profile cpu] [--screenshot out.png]``. Prints one
JSON object: the median and worst milliseconds from an arrow-key press on the focused slider to the end of
the figure's redraw (goal: median < 100 ms, worst < 150 ms), the machine, and the JupyterLab version.

How: copies the notebook into a temporary folder with ``INTERACTIVE = True`` (the committed notebooks stay
untouched: JupyterLab autosaves), starts JupyterLab on 127.0.0.1 with a random port and token, opens the
copy in Chromium driven by Playwright (the system Chromium: ``executable_path``), runs all cells from the
Run menu, then presses arrow keys on the slider. A capture-phase ``keydown`` listener stamps the press; a
``MutationObserver`` on the figure stamps the first redraw (plotly redraws synchronously, so the observer
runs once the redraw is complete). The round trip includes the kernel: the slider's new value goes to the
kernel, which solves the three configurations and sends the figure update back.

``tests/test_browser.py`` drives the same functions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook tab in front
_PROMPTS = f"[...document.querySelectorAll('{PANEL} .jp-CodeCell .jp-InputPrompt')]"  # JS: its cells' prompts

# Stamps the key press and the first mutation of the figure after it (see the module docstring).
_PROBE = """(plot) => {
  window.__nslab = {t0: null, t1: null};
  document.addEventListener('keydown', () => { window.__nslab = {t0: performance.now(), t1: null}; }, true);
  new MutationObserver(() => {
    const s = window.__nslab;
    if (s.t0 !== null && s.t1 === null) { s.t1 = performance.now(); }
  }).observe(plot, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def prepare(notebook: str, folder: Path, parameters: Mapping[str, object]) -> Path:
    """Copy ``notebooks/<notebook>`` into ``folder`` with its parameters cell's values replaced."""
    nb = nbformat.read(ROOT / "notebooks" / notebook, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = cell.source.splitlines()
    for name, value in parameters.items():
        hit = [i for i, line in enumerate(lines) if line.split("=")[0].strip() == name]
        if hit:
            lines[hit[0]] = f"{name} = {value!r}"
        else:
            lines.append(f"{name} = {value!r}")
    cell.source = "\n".join(lines)
    out = folder / notebook
    nbformat.write(nb, out)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(folder: Path, timeout: float = 90.0) -> Iterator[str]:
    """A JupyterLab server on 127.0.0.1 (random port and token) serving ``folder``; yields its base URL
    with the token as ``?token=...`` to append to. The server is stopped (and its kernels) on exit."""
    port, token = _free_port(), secrets.token_hex(16)
    # JupyterLab's own settings and workspaces in the folder: no "get notified about Jupyter news?" toast
    # over the page, and nothing of the user's JupyterLab state read or written
    news = folder / ".lab" / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--ServerApp.port={port}",
           "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
           "--ServerApp.port_retries=0", "--allow-root", f"--LabApp.user_settings_dir={folder / '.lab' / 'settings'}",
           f"--LabApp.workspaces_dir={folder / '.lab' / 'workspaces'}"]
    log = open(folder / "jupyterlab.log", "w")  # noqa: SIM115 - kept open for the server's lifetime
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() - t0 > timeout:
                    raise RuntimeError(f"JupyterLab did not start: see {folder / 'jupyterlab.log'}") from None
                time.sleep(0.5)
        yield f"{base}|{token}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


@contextlib.contextmanager
def browser(width: int = 1400, height: int = 1000):
    """A Playwright page in the system Chromium (headless)."""
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        raise RuntimeError("no Chromium on PATH: apt-get install chromium")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        try:
            page = b.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            b.close()


def open_and_run_all(page, server: str, notebook: str, timeout: float = 300.0) -> None:
    """Open ``notebook`` in JupyterLab, wait for its kernel, run all cells from the Run menu and wait until
    every cell has executed (no ``[*]`` prompt left)."""
    base, token = server.split("|")
    # ?reset: a fresh workspace, so that a notebook opened before is not restored beside this one
    page.goto(f"{base}/lab/tree/{notebook}?reset&token={token}", timeout=60_000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
    # the status bar reads "Python 3 (ipykernel) | Idle" once the kernel is connected and ready
    page.wait_for_function("() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
                           ".some(e => /\\| Idle/.test(e.textContent))", timeout=90_000)
    for _ in range(3):  # a click that lands while the notebook still loads is lost: retry
        page.click("li.lm-MenuBar-item:has-text('Run')")
        page.click("li.lm-Menu-item:has-text('Run All Cells')")
        try:
            page.wait_for_function(f"() => {_PROMPTS}.some(p => p.textContent.trim() !== '[ ]:')", timeout=10_000)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError
            continue
    t0 = time.monotonic()
    stalled = None  # when the kernel went idle with cells still unexecuted: a cell raised, Run All stopped
    while True:
        time.sleep(0.5)
        state = page.evaluate(f"""() => {{
            const prompts = {_PROMPTS}.map(p => p.textContent);
            return {{running: prompts.filter(p => p.includes('*')).length,
                    pending: prompts.filter(p => p.trim() === '[ ]:').length}};
        }}""")
        if state["running"] == 0 and state["pending"] == 0:
            return
        stalled = (stalled or time.monotonic()) if state["running"] == 0 else None
        if stalled and time.monotonic() - stalled > 5:
            err = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            tb = [t for t in err.all_inner_texts() if "Traceback" in t or "Error" in t]
            raise RuntimeError(f"{notebook}: Run All stopped with {state['pending']} cells unexecuted: "
                               + (tb[-1][-800:] if tb else "no traceback shown"))
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{notebook}: cells still running after {timeout:.0f} s ({state})")


def press(page, plot_selector: str, handle_selector: str, keys: list[str], timeout_ms: float = 5000) -> list[dict]:
    """Focus a slider, press ``keys`` one by one and time each redraw of the figure.

    Args:
        plot_selector: CSS selector of the plotly figure that must redraw.
        handle_selector: CSS selector of the slider's handle (focused by a click).
        keys: key names, e.g. ``["ArrowLeft"] * 10``.

    Returns:
        One ``{"key", "ms", "title"}`` per press: key-to-redraw milliseconds and the figure's title after.

    Raises:
        TimeoutError: a press that did not redraw the figure within ``timeout_ms``.
    """
    plot = page.locator(plot_selector).first
    plot.wait_for(timeout=30_000)
    page.evaluate(_PROBE, plot.element_handle())
    handle = page.locator(handle_selector).first
    handle.scroll_into_view_if_needed()
    handle.click()
    time.sleep(1.0)  # the click itself may move the slider: let that redraw settle
    out = []
    for key in keys:
        page.evaluate("() => { window.__nslab = {t0: null, t1: null}; }")
        page.keyboard.press(key)
        page.wait_for_function("() => window.__nslab.t1 !== null", timeout=timeout_ms)
        ms = page.evaluate("() => window.__nslab.t1 - window.__nslab.t0")
        time.sleep(0.15)  # let the rest of the update settle before the next press
        out.append({"key": key, "ms": round(ms, 1), "title": plot.locator(".gtitle").first.text_content()})
    return out


EXPLORER_PLOT = f"{PANEL} .widget-vbox .js-plotly-plot"
EXPLORER_HANDLE = f"{PANEL} .widget-vbox .widget-hslider .noUi-handle"


def measure(moves: int = 20, profile: str = "cpu", screenshot: str | None = None) -> dict:
    """Run notebook 03 in JupyterLab and time ``moves`` slider moves (half left, then half right)."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="nslab-lab-") as tmp:
        folder = Path(tmp)
        prepare("03_budget_explorer.ipynb", folder, {"PROFILE": profile, "INTERACTIVE": True})
        with jupyterlab(folder) as server, browser() as page:
            open_and_run_all(page, server, "03_budget_explorer.ipynb")
            keys = ["ArrowLeft"] * (moves // 2) + ["ArrowRight"] * (moves - moves // 2)
            res = press(page, EXPLORER_PLOT, EXPLORER_HANDLE, keys)
            if screenshot:
                page.locator(".widget-vbox").first.screenshot(path=screenshot)
    ms = [r["ms"] for r in res]
    import jupyterlab as jl

    return {"moves": len(ms), "median_ms": round(float(np.median(ms)), 1), "worst_ms": round(max(ms), 1),
            "goal": "median < 100 ms, worst < 150 ms", "met": bool(np.median(ms) < 100 and max(ms) < 150),
            "distinct_titles": len({r["title"] for r in res}), "jupyterlab": jl.__version__,
            "machine": f"{_cpu_model()}, {os.cpu_count()} cpus ({platform.machine()})",
            "ms": ms}


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(x.split(":", 1)[1].strip() for x in lines if x.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.platform()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moves", type=int, default=20)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--screenshot", default=None, help="PNG of the explorer after the moves")
    args = ap.parse_args()
    print(json.dumps(measure(args.moves, args.profile, args.screenshot)))


if __name__ == "__main__":
    main()
