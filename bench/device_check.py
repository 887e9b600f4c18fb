"""The one check to run first on a lent GPU: nslab's CUDA path, step by step, in about 6 minutes.

Each step runs in a subprocess of its own with its own timeout, in this order, so that whatever finishes
first is the most informative; a failed or timed-out step is recorded and the next one starts:

1. ``env``: the device, driver, CUDA, torch and cuDNN versions;
2. ``parity``: eager vs graphed training (:class:`nslab.runs.graphs.StepGraphs`) on VGG11 r=0.25, ResNet18
   r=0.25 and MobileNetV2 r=0.5: one epoch of 1,000 images at batch 128 (the last batch, 104, is short and
   eager), deterministic cuDNN; the max relative difference of parameters, momentum buffers and BatchNorm
   statistics after it, and the steps per second of each (two more epochs, timed);
3. ``pytest``: ``tests/test_gpu_path.py``, ``tests/test_latency_protocol.py`` and the CUDA-only tests;
4. ``resume``: a graphed training run interrupted after epoch 2 and resumed, against an uninterrupted one;
   a channels-last MobileNetV2 prune step (the network shrunk, its momentum buffers' memory format);
5. ``bench``: ``bench/gpu_check.py`` and ``bench/gpu_throughput.py`` (k = 1, 2, 4; processes and streams);
6. ``latency``: latency with the earlier protocol (eager events) and the GPU's (a graphed forward behind a
   queued sleep), and their ratio.

Writes ``NN_<step>.json`` per step to ``--out`` (default ``$OUT``, else ``device_check/``) as it finishes, its
log in ``logs/``, and ``summary.json`` (rewritten after every step). Each step's JSON holds ``step``,
``index``, ``status`` (``ok``, ``failed``, ``timeout`` or ``skipped``), ``seconds``, ``timeout_s`` and
``result`` (or ``error`` / ``reason``). ``--smoke`` runs every step on the CPU at tiny sizes, the CUDA-only
parts skipped with the reason recorded (well under a minute; what the tests run). Exits 0 when no step failed.

    python bench/device_check.py                  # on the GPU machine: JSON under $OUT
    python bench/device_check.py --smoke --out /tmp/dc
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (name, timeout on a GPU in s, timeout of the smoke run in s): 540 s in all, a typical H100/H200 run ~4-5 min
STEPS = (("env", 45, 60), ("parity", 100, 60), ("pytest", 140, 90), ("resume", 80, 90), ("bench", 130, 90),
         ("latency", 45, 60))
NAMES = tuple(s[0] for s in STEPS)


def _gpu(smoke: bool) -> bool:
    import torch

    return not smoke and torch.cuda.is_available()


def _device(smoke: bool):
    import torch

    return torch.device("cuda" if _gpu(smoke) else "cpu")


def _rel(a, b) -> float:
    """``||a - b|| / ||a||`` (L2) of two tensors, the denominator floored at an rms of 1e-4 per element: the
    zero-initialised conv biases ahead of a BatchNorm get almost no gradient and stay near 1e-8, where any
    rounding would read as a large relative difference."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / max(float(a.norm()), 1e-4 * a.numel() ** 0.5))


# --------------------------------------------------------------------------------------------------------
# the steps (each runs in its own process: ``--step NAME``)


def step_env(smoke: bool) -> dict:
    import platform

    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda_build": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count(), "smoke": smoke}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(device=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                   sms=p.multi_processor_count, device_count=torch.cuda.device_count())
        with contextlib.suppress(Exception):
            q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit,mig.mode.current",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            out["nvidia_smi"] = q.stdout.strip()
    else:
        out["device"] = "cpu"
    return out


def _parts(arch: str, ratio: float, images: int, batch: int, dev, seed: int = 0):
    """A model and the batches of ``images`` random CIFAR-shaped images, the last batch short."""
    from gpu_throughput import run_parts  # bench/ is this script's folder, first on sys.path

    model, _, batches = run_parts(dev, arch, ratio, batch, images, seed, drop_last=False)
    return model, batches


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def step_parity(smoke: bool) -> dict:
    import torch

    from nslab.runs.loop import StepGraphs, train_one_epoch

    dev = _device(smoke)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    images, batch = (24, 16) if smoke else (1000, 128)
    nets = (("vgg11", 0.125), ("resnet18", 0.125)) if smoke else (("vgg11", 0.25), ("resnet18", 0.25),
                                                                  ("mobilenetv2", 0.5))
    out = {"device": str(dev), "images": images, "batch": batch, "deterministic_cudnn": True, "nets": {}}
    for arch, ratio in nets:
        model0, batches = _parts(arch, ratio, images, batch, dev)
        runs = {}
        for mode in ("eager", "graphed"):
            model = copy.deepcopy(model0)
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
            graphs = StepGraphs(on_cpu=smoke) if mode == "graphed" else None
            train_one_epoch(model, batches.iterate(0), opt, lambda i: 0.05, graphs=graphs)
            _sync(dev)
            after_one = copy.deepcopy((model, opt))  # together: the copy's SGD holds the copy's parameters
            t0, steps = time.perf_counter(), 0  # two more epochs, timed (the first held the capture)
            for e in (1, 2):
                steps += train_one_epoch(model, batches.iterate(e), opt, lambda i: 0.05, graphs=graphs).steps
            _sync(dev)
            sec = time.perf_counter() - t0
            runs[mode] = (*after_one, steps / sec, None if graphs is None else graphs.captures)
        (m1, o1, sps1, _), (m2, o2, sps2, caps) = runs["eager"], runs["graphed"]  # m, o: after the first epoch
        p1, p2 = dict(m1.named_parameters()), dict(m2.named_parameters())
        bufs = [_rel(o1.state[p1[k]]["momentum_buffer"], o2.state[p2[k]]["momentum_buffer"]) for k in p1]
        bn = [_rel(a, b) for (k, a), b in zip(m1.named_buffers(), m2.buffers()) if a.is_floating_point()]
        out["nets"][f"{arch}@{ratio}"] = {
            "params_max_rel": max(_rel(p1[k].detach(), p2[k].detach()) for k in p1),
            "momentum_max_rel": max(bufs), "bn_stats_max_rel": max(bn) if bn else None,
            "eager_steps_per_s": round(sps1, 2), "graphed_steps_per_s": round(sps2, 2),
            "graphed": dev.type == "cuda" or smoke, "captures": caps}
    return out


def _pytest(args: list[str], timeout: float) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout)
    tail = (r.stdout + r.stderr).strip().splitlines()
    return {"args": args, "rc": r.returncode, "seconds": round(time.perf_counter() - t0, 1),
            "summary": tail[-1] if tail else "", "tail": tail[-25:]}


def step_pytest(smoke: bool) -> dict:
    files = ["tests/test_gpu_path.py", "tests/test_latency_protocol.py"]
    cuda_only = ["tests/test_train.py", "tests/test_latency.py", "tests/test_prune.py", "-k", "cuda"]
    if smoke:  # the suite runs these files itself: collect only
        return {"collect": _pytest(["--collect-only", *files], 60), "skipped": "smoke: collection only"}
    out = {"gpu_path": _pytest(files, 100), "cuda_only": _pytest(cuda_only, 35)}
    if any(v["rc"] not in (0, 5) for v in out.values()):  # 5: nothing collected
        out["failed"] = f"pytest failed: {[v['summary'] for v in out.values()]}"
    return out


def step_resume(smoke: bool) -> dict:
    import torch

    from nslab import create_model, uniform_widths
    from nslab.data import synthetic_data
    from nslab.runs.train import recipe, scale_epochs, seed_everything, train

    dev = _device(smoke)
    torch.backends.cudnn.deterministic = True
    data = synthetic_data(10, 4 if smoke else 100, 4 if smoke else 20)
    r = scale_epochs(recipe("smoke", "cifar10"), 3 if smoke else 4)
    ratio = 0.125 if smoke else 0.25

    class Stop(Exception):
        pass

    def stop(rec):
        if rec.epoch == 2:
            raise Stop

    def fresh():
        seed_everything(0)
        return create_model("vgg11", uniform_widths("vgg11", ratio), "cifar10")

    whole = fresh()
    h_whole = train(whole, data, r, device=dev, seed=0, progress=False)
    with tempfile.TemporaryDirectory() as rd:
        with contextlib.suppress(Stop):
            train(fresh(), data, r, device=dev, seed=0, run_dir=rd, progress=False, on_epoch_end=stop)
        resumed = fresh()
        h_res = train(resumed, data, r, device=dev, seed=0, run_dir=rd, progress=False)
    pw, pr = dict(whole.named_parameters()), dict(resumed.named_parameters())
    out = {"device": str(dev), "epochs": r.epochs, "graphed": dev.type == "cuda",
           "params_max_rel": max(_rel(pw[k].detach(), pr[k].detach()) for k in pw),
           "train_loss_whole": h_whole.column("train_loss"), "train_loss_resumed": h_res.column("train_loss"),
           "test_acc_equal": h_whole.column("test_acc") == h_res.column("test_acc")}
    out["prune_step"] = _channels_last_prune_step(dev)
    return out


def _channels_last_prune_step(dev) -> dict:
    """One shrink of a channels-last MobileNetV2 r=0.5 with its SGD state, then a training step of the result."""
    import torch
    import torch.nn.functional as F

    from nslab import uniform_widths
    from nslab.search.channels import shrink_model, shrinkable_layers

    model, batches = _parts("mobilenetv2", 0.5, 32, 16, dev)
    # channels-last depthwise backward on the CPU can abort or hang (nslab.runs.loop.channels_last_ok)
    fmt = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = next(iter(batches.iterate(0)))
    x = x.contiguous(memory_format=fmt)
    F.cross_entropy(model(x).float(), y).backward()
    opt.step()
    widths = uniform_widths("mobilenetv2", 0.5)
    entry = sorted(shrinkable_layers("mobilenetv2"))[0]
    keep = {entry: torch.arange(widths[entry] // 2)}
    new, phys, new_opt = shrink_model(model, "mobilenetv2", widths, keep, optimizer=opt)
    four = [p for p in new.parameters() if p.dim() == 4]
    bufs = [new_opt.state[p]["momentum_buffer"] for p in four if "momentum_buffer" in new_opt.state[p]]
    new_opt.zero_grad()
    loss = F.cross_entropy(new(x).float(), y)
    loss.backward()
    new_opt.step()
    cl = torch.channels_last
    return {"memory_format": str(fmt).split(".")[-1], "entry": entry, "widths_after": phys[entry],
            "loss_finite": bool(torch.isfinite(loss)),
            "weights_channels_last": sum(p.is_contiguous(memory_format=cl) for p in four), "weights": len(four),
            "momentum_channels_last": sum(b.is_contiguous(memory_format=cl) for b in bufs), "momentum": len(bufs)}


def _bench(script: str, args: list[str], timeout: float) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        stdout, stderr = proc.communicate()
        return {"script": script, "status": "timeout", "timeout_s": timeout, "stdout": stdout.splitlines()[-30:],
                "stderr": stderr.splitlines()[-15:]}
    lines = []
    for line in stdout.splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(line))
    return {"script": script, "status": "ok" if proc.returncode == 0 else "failed", "rc": proc.returncode,
            "seconds": round(time.perf_counter() - t0, 1), "json": lines, "stderr": stderr.splitlines()[-15:]}


def step_bench(smoke: bool) -> dict:
    if smoke:
        # its training checks take a minute of a shared CPU: tests/test_gpu_path.py runs them
        check = _bench("gpu_check.py", ["--device", "cpu", "--smoke", "--checks", "forward,latency"], 40)
        thr = _bench("gpu_throughput.py", ["--device", "cpu", "--smoke"], 40)
    else:
        check = _bench("gpu_check.py", ["--epoch-images", "20000"], 60)
        thr = _bench("gpu_throughput.py", ["--ks", "1,2,4", "--modes", "processes,streams", "--seconds", "1.5"], 60)
    out = {"gpu_check": check, "gpu_throughput": thr}
    bad = [k for k, v in out.items() if v.get("status") != "ok"]
    if bad:
        out["failed"] = f"{', '.join(bad)} did not finish"
    return out


def step_latency(smoke: bool) -> dict:
    from nslab import create_model, uniform_widths
    from nslab.scaling.latency import measure_latency, timing_protocol

    dev = _device(smoke)
    kw = dict(batch=4, warmup=1, repeat=3) if smoke else dict(batch=100, warmup=20, repeat=80)
    nets = [("vgg11", 0.25)] if smoke else [("vgg11", 0.25), ("vgg11", 0.5), ("vgg11", 1.0), ("resnet18", 0.25),
                                            ("mobilenetv2", 0.5)]
    out = {"device": str(dev), "protocols": {"before": timing_protocol(dev, "eager"), "after": timing_protocol(dev)},
           **kw, "nets": {}}
    for arch, ratio in nets:
        m = create_model(arch, uniform_widths(arch, ratio), "cifar10")
        before, before_sd = measure_latency(m, (3, 32, 32), dev, protocol="eager", **kw)
        after, after_sd = measure_latency(m, (3, 32, 32), dev, protocol="graph", **kw)
        out["nets"][f"{arch}@{ratio}"] = {"before_ms": before, "before_std_ms": before_sd, "after_ms": after,
                                          "after_std_ms": after_sd, "before_over_after": before / after}
    return out


STEP_FUNCS = {"env": step_env, "parity": step_parity, "pytest": step_pytest, "resume": step_resume,
              "bench": step_bench, "latency": step_latency}


# --------------------------------------------------------------------------------------------------------
# the driver: one subprocess per step


def _kill(proc: subprocess.Popen) -> None:
    """End ``proc`` and everything it started (its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.kill()


def _write(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def run_step(name: str, index: int, timeout: float, out: Path, smoke: bool, fail: dict[str, str]) -> dict:
    """Run one step in a subprocess within ``timeout`` s; returns (and writes) its record."""
    result = out / "logs" / f"{index:02d}_{name}.result.json"
    log = out / "logs" / f"{index:02d}_{name}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--result", str(result)]
    cmd += ["--smoke"] if smoke else []
    cmd += ["--fail", f"{name}:{fail[name]}" if fail[name] else name] if name in fail else []
    rec = {"step": name, "index": index, "timeout_s": round(timeout, 1)}
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            proc.wait()
            rc = None
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    tail = log.read_text(errors="replace").splitlines()[-30:]
    if rc is None:
        rec.update(status="timeout", error=f"no result within {timeout:.0f} s", log_tail=tail)
    elif rc == 0 and result.exists():
        rec.update(status="ok", result=json.loads(result.read_text()))
    else:
        rec.update(status="failed", error=f"exit code {rc}", log_tail=tail)
        if result.exists():
            rec["result"] = json.loads(result.read_text())
            rec["error"] += f": {rec['result'].get('failed')}"
    _write(out / f"{index:02d}_{name}.json", rec)
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "device_check", help="folder of the JSON files")
    ap.add_argument("--smoke", action="store_true", help="every step on the CPU at tiny sizes (for tests)")
    ap.add_argument("--only", default=",".join(NAMES), help=f"comma-separated steps, of {', '.join(NAMES)}")
    ap.add_argument("--budget", type=float, default=None, help="seconds for all steps (default: their timeouts)")
    ap.add_argument("--fail", default="", help="for tests: comma-separated steps made to raise (NAME) or hang "
                    "(NAME:hang)")
    ap.add_argument("--step", choices=NAMES, help=argparse.SUPPRESS)  # internal: run one step here
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    fail = {s.split(":")[0]: s.partition(":")[2] for s in args.fail.split(",") if s}
    only = [s for s in args.only.split(",") if s]
    bad = sorted((set(only) | set(fail)) - set(NAMES)) + sorted(f"{k}:{v}" for k, v in fail.items() if v not in
                                                                  ("", "hang"))
    if bad:
        ap.error(f"unknown step(s) {', '.join(bad)}; accepted: {', '.join(NAMES)}")
    if args.step:  # a child: run the step, write its result
        if args.step in fail:
            while fail[args.step] == "hang":
                time.sleep(1)
            raise RuntimeError(f"step {args.step} made to fail (--fail)")
        res = STEP_FUNCS[args.step](args.smoke)
        _write(Path(args.result), res)
        return 1 if res.get("failed") else 0  # a failed step keeps what it measured
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    gpu = _gpu(args.smoke)
    start, records = time.perf_counter(), []
    summary = {"smoke": args.smoke, "out": str(out), "steps": records, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for index, (name, t_gpu, t_smoke) in enumerate(STEPS, 1):
        if name not in only:
            continue
        timeout = t_smoke if args.smoke else t_gpu
        left = None if args.budget is None else args.budget - (time.perf_counter() - start)
        if name != "env" and not args.smoke and not gpu:
            rec = {"step": name, "index": index, "status": "skipped",
                   "reason": "no CUDA device (run with --smoke for the CPU dry run)"}
            _write(out / f"{index:02d}_{name}.json", rec)
        elif left is not None and left < 5:
            rec = {"step": name, "index": index, "status": "skipped", "reason": f"budget spent ({args.budget:g} s)"}
            _write(out / f"{index:02d}_{name}.json", rec)
        else:
            rec = run_step(name, index, timeout if left is None else min(timeout, left), out, args.smoke, fail)
        records.append({k: rec[k] for k in ("step", "index", "status", "seconds", "error", "reason") if k in rec})
        summary["seconds"] = round(time.perf_counter() - start, 1)
        _write(out / "summary.json", summary)
        print(f"{index}. {name}: {rec['status']} ({rec.get('seconds', 0)} s)", file=sys.stderr, flush=True)
    summary["ok"] = all(r["status"] in ("ok", "skipped") for r in records)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    _write(out / "summary.json", summary)
    print(json.dumps({"ok": summary["ok"], "out": str(out), "seconds": summary["seconds"],
                      "steps": {r["step"]: r["status"] for r in records}}), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
