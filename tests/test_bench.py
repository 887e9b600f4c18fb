"""Every bench/ script runs: its smoke path on the CPU, as a subprocess, printing what it promises.

The benchmarks' goals (speed-ups, errors, latencies) are measured by running them in full, not here; this
only keeps each script working as the package changes under it.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = sorted(p.name for p in (ROOT / "bench").glob("*.py"))


def run(script: str, *args: str, timeout: int = 240) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"{script} {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def last_json(stdout: str) -> dict:
    """The JSON object a script prints last (on one line, or indented over several)."""
    start = stdout.rfind("\n{") + 1 if "\n{" in stdout else stdout.find("{")
    return json.loads(stdout[start:])


def test_every_bench_script_has_a_smoke_test():
    # a script nobody runs rots silently: each must be named by a test (this file or the GPU/browser ones)
    tests = " ".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    missing = [s for s in BENCH if not re.search(rf"\b{re.escape(s)}\b", tests)]
    assert not missing, f"bench scripts without a smoke test: {missing}"


def test_budget_solver_smoke():
    out = run("budget_solver.py", "--smoke")
    rows = [line.split() for line in out.splitlines() if line.startswith(("vgg11", "resnet18", "mobilenetv2"))]
    assert [r[0] for r in rows] == ["vgg11", "resnet18", "mobilenetv2"]  # one row of each of the three tables
    errors = [float(r[-1].rstrip("%")) for r in rows[:2]]
    assert all(e < 5 for e in errors)  # the released descent's error, in percent: finite and plausible


def test_latency_table_smoke(tmp_path):
    res = last_json(run("latency_table.py", "--smoke", "--cache-dir", str(tmp_path)))
    assert {r["arch"] for r in res["configs"]} == {"vgg11"} and len(res["configs"]) == 3
    assert all(r["measured_ms"] > 0 and r["predicted_ms"] > 0 for r in res["configs"])
    assert res["entries_timed_now"] > 0 and Path(res["table"]).parent == tmp_path


def test_prune_speed_smoke():
    res = last_json(run("prune_speed.py", "--smoke", "--threads", "1"))
    assert res["shrink_s"] > 0 and res["mask_s"] > 0 and res["same_first_rows"] is True


def test_train_throughput_smoke():
    res = last_json(run("train_throughput.py", "--smoke", "--threads", "1"))
    assert res["images_timed"] == 64 and res["nslab_best"] > 0 and res["reference_best"] > 0


def test_slider_smoke():
    res = last_json(run("slider.py", "--moves", "2"))
    assert res and all(v["moves"] == 2 and v["max_ms"] >= v["median_ms"] > 0 for v in res.values())


@pytest.mark.parametrize("iterations", [1])
def test_shape_agreement_smoke(tmp_path, iterations):
    res = last_json(run("shape_agreement.py", "--profile", "smoke", "--out", str(tmp_path), "--iterations",
                        str(iterations)))
    assert len(res["iterations"]) == iterations and set(res["iterations"][0]["vs_authors"]) == {"1", "15"}
    assert (tmp_path / "descent").is_dir()


def test_trace_speed_smoke():
    res = last_json(run("trace_speed.py", "--smoke", "--threads", "1"))
    (row,) = res["models"]
    assert row["model"] == "resnet18" and row["groups"] == 12 and row["params"] == 11689512
    assert 0 < row["trace_s"] < 60 and 0 < res["max_count_us"] < 1000


def test_bf16_ranking_smoke():
    res = last_json(run("bf16_ranking.py", "--smoke"))
    assert set(res["by_k"]) == {"4", "10", "40"} and res["channels"] > 40
    assert all(0 <= v["share_differs"] <= 1 and v["max_channels_differ"] <= int(k) for k, v in res["by_k"].items())


def test_coverage_smoke():
    out = run("coverage.py", "--smoke", "--search", timeout=600)  # three traces and two searches: ~40 s idle
    res = last_json(out)
    rows = {r["model"]: r for r in res["rows"]}
    assert list(rows) == ["torchvision:resnet18", "torchvision:mobilenet_v3_small", "torchvision:shufflenet_v2_x0_5"]
    r18 = rows["torchvision:resnet18"]
    assert r18["groups"] == 12 and r18["counts_exact"] is True and r18["error"] is None and "rows" in r18["search"]
    assert rows["torchvision:mobilenet_v3_small"]["counts_exact"] is True
    shuffle = rows["torchvision:shufflenet_v2_x0_5"]  # refused with the op named, never counted
    assert shuffle["counts_exact"] is None and shuffle["groups"] is None and "op 'view'" in shuffle["error"]
    assert all(r["search"] or r["error"] for r in rows.values())  # each search ran, or says why not
    assert r18["shrinkable"] == 12 and r18["shrink_diff"] < 1e-4 and "| yes: 12 of 12 groups |" in out
    head = "| model | groups | discovery (s) | counts exact | shrinks exactly | search smoke-runs | error |"
    assert head + "\n" + "|---" * 7 + "|\n" in out  # the delimiter row has as many columns as the head
    assert out.count("| `torchvision:") == 3
