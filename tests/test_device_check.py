"""bench/device_check.py's smoke run on the CPU: one JSON per step in order, a summary, a failed or hung step
recorded as such without stopping the others, and its arguments checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "device_check.py"
STEPS = ["env", "parity", "pytest", "resume", "bench", "latency"]


def _run(*args: str, env: dict | None = None, timeout: float = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    # every step at tiny sizes on the CPU; "bench" made to fail (tests/test_gpu_path.py runs both benches' smoke)
    out = tmp_path_factory.mktemp("device_check")
    res = _run("--smoke", "--out", str(out), "--fail", "bench")
    return out, res


def test_smoke_run_writes_one_json_per_step_in_order(smoke):
    out, res = smoke
    files = sorted(p.name for p in out.glob("*.json"))
    assert files == [f"{i:02d}_{s}.json" for i, s in enumerate(STEPS, 1)] + ["summary.json"], res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["step"] for r in summary["steps"]] == STEPS and summary["smoke"] is True
    for i, name in enumerate(STEPS, 1):
        rec = json.loads((out / f"{i:02d}_{name}.json").read_text())
        assert rec["step"] == name and rec["index"] == i and rec["seconds"] >= 0 and rec["timeout_s"] > 0
        if name != "bench":
            assert rec["status"] == "ok", (name, rec.get("log_tail"))
            assert isinstance(rec["result"], dict)
        assert (out / "logs" / f"{i:02d}_{name}.log").exists()
    assert json.loads(res.stdout.strip().splitlines()[-1])["steps"]["latency"] == "ok"


def test_a_failed_step_is_recorded_and_the_run_goes_on(smoke):
    out, res = smoke
    rec = json.loads((out / "05_bench.json").read_text())
    assert rec["status"] == "failed" and "exit code" in rec["error"] and "made to fail" in "\n".join(rec["log_tail"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is False and res.returncode == 1
    assert summary["steps"][-1]["status"] == "ok"  # the step after it ran


def test_smoke_results_hold_what_each_step_measures(smoke):
    out, _ = smoke
    env = json.loads((out / "01_env.json").read_text())["result"]
    assert {"torch", "cudnn", "cuda_available", "device"} <= set(env)
    parity = json.loads((out / "02_parity.json").read_text())["result"]
    for net in parity["nets"].values():
        assert {"params_max_rel", "momentum_max_rel", "bn_stats_max_rel", "eager_steps_per_s",
                "graphed_steps_per_s"} <= set(net)
        assert net["params_max_rel"] < 1e-3 and net["captures"] == 1  # on the CPU the "graph" is the same step
    assert "skipped" in json.loads((out / "03_pytest.json").read_text())["result"]
    resume = json.loads((out / "04_resume.json").read_text())["result"]
    assert resume["params_max_rel"] == 0.0 and resume["test_acc_equal"]  # bit for bit on the CPU
    step = resume["prune_step"]
    assert step["loss_finite"] and step["momentum"] == step["weights"] > 0
    lat = json.loads((out / "06_latency.json").read_text())["result"]
    assert lat["protocols"] == {"before": "cpu-wall", "after": "cpu-wall"}
    assert all(v["before_ms"] > 0 and v["after_ms"] > 0 and v["before_over_after"] > 0 for v in lat["nets"].values())


def test_a_hung_step_times_out_and_out_defaults_to_the_out_variable(tmp_path):
    res = _run("--smoke", "--only", "env", "--fail", "env:hang", "--budget", "12", env={"OUT": str(tmp_path)},
               timeout=120)
    rec = json.loads((tmp_path / "01_env.json").read_text())
    assert rec["status"] == "timeout" and rec["timeout_s"] <= 12 and res.returncode == 1
    assert [r["step"] for r in json.loads((tmp_path / "summary.json").read_text())["steps"]] == ["env"]


@pytest.mark.parametrize("args", [["--only", "envv"], ["--fail", "parity:explode"]])
def test_bad_arguments_name_the_accepted_steps(args, tmp_path):
    res = _run("--smoke", "--out", str(tmp_path), *args, timeout=60)
    assert res.returncode == 2 and "accepted: env, parity, pytest, resume, bench, latency" in res.stderr
    assert not list(tmp_path.glob("*.json"))
