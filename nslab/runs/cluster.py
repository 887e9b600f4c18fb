"""A local Ray cluster this process starts, in a known place, and the cleanup of one a killed driver left.

``ray.init()`` without an address ties the cluster to the driver in ways that a ``SIGKILL`` of the driver
does not undo reliably. :class:`LocalCluster` instead starts ``ray start --head --block`` as the leader of
a session of its own and records the leader's pid (and start time, against pid reuse) in
``<place>/cluster.json``, where ``<place>`` is ``$TMPDIR/nslab-ray-<uid>-<key hash>``: short, so Ray's
socket paths stay under the 107 bytes Unix sockets allow, and the same for the same key (the executor
passes the results directory), so the next run finds what a killed run left. Every Ray process of the
cluster (GCS, raylet, workers) stays in that session; stopping the cluster ends exactly those processes,
by pid, and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..config import digest

__all__ = ["LocalCluster", "session_processes"]

_RECORD = "cluster.json"


def _stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, session id, start time in clock ticks)`` of a process, or ``None`` if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = raw[raw.rfind(")") + 2:].split()  # fields after the command name, which may hold spaces
    return f[0], int(f[3]), int(f[19])


def session_processes(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid`` whose command line mentions Ray (Linux ``/proc``)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = _stat(int(d))
        if st is None or st[1] != sid or st[0] in ("Z", "X"):
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"ray" in cmd:
            out.append(int(d))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """A one-node Ray cluster of this machine, started and stopped by nslab.

    Args:
        key: names the cluster's place (the same key, the same place; e.g. the results directory).
        root: parent folder of the place (default: the system's temporary folder).
    """

    def __init__(self, key: str, root: str | os.PathLike | None = None):
        base = Path(root) if root is not None else Path(tempfile.gettempdir())
        self.place = base / f"nslab-ray-{os.getuid()}-{digest(str(key), n=8)}"
        self.record = self.place / _RECORD
        self.proc: subprocess.Popen | None = None

    def leftovers(self) -> list[int]:
        """Processes of a cluster a previous driver started here and did not stop (e.g. it was killed)."""
        if not self.record.is_file():
            return []
        try:
            rec = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return []
        st = _stat(rec["pid"])
        if st is not None and st[2] != rec["start"]:
            return []  # the pid was reused by another process: its session is not ours
        return session_processes(rec["pid"])

    def cleanup(self) -> int:
        """End the leftovers of a previous driver (SIGTERM, then SIGKILL after 1 s); returns how many.

        Nothing is lost: every result is written atomically, and the running tasks resume from their
        checkpoints when the grid runs again.
        """
        pids = self.leftovers()
        _end(pids)
        if self.record.is_file():
            self.record.unlink()
        if pids:
            print(f"nslab: stopped {len(pids)} process(es) of a Ray cluster a previous run left in {self.place}",
                  file=sys.stderr, flush=True)
        return len(pids)

    def start(self, num_cpus: int | None = None, num_gpus: int | None = None, timeout: float = 120) -> str:
        """Clean up leftovers, start the head node and wait until it accepts drivers; returns its address.

        Raises:
            RuntimeError: ``ray start`` exited or did not come up within ``timeout`` s (its log's tail).
        """
        self.cleanup()
        # old sessions' logs: the cluster that wrote them is gone
        shutil.rmtree(self.place, ignore_errors=True)
        self.place.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--port", str(port),
               "--node-ip-address", "127.0.0.1", "--temp-dir", str(self.place / "r"),
               "--num-cpus", str(num_cpus or os.cpu_count() or 1), "--include-dashboard=false",
               "--disable-usage-stats", "--dashboard-agent-listen-port", str(_free_port()),
               "--runtime-env-agent-port", str(_free_port()),
               "--metrics-export-port", str(_free_port())]
        if num_gpus is not None:
            cmd += ["--num-gpus", str(num_gpus)]
        log = open(self.place / "ray-start.log", "wb")  # noqa: SIM115 - the child writes it while we run
        # the workers import this very nslab (a checkout that is not installed included)
        here = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
               "PYTHONPATH": os.pathsep.join(x for x in (here, os.environ.get("PYTHONPATH")) if x)}
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=env)
        log.close()
        st = _stat(self.proc.pid)
        self.record.write_text(json.dumps({"pid": self.proc.pid, "start": st[2] if st else None, "port": port}))
        address = f"127.0.0.1:{port}"
        t0 = time.monotonic()
        while True:
            status = self.proc.poll()
            if status is not None:
                tail = (self.place / "ray-start.log").read_text(errors="replace")[-1500:]
                self.stop()
                raise RuntimeError(f"ray start exited with status {status}:\n{tail}")
            if (self.place / "r").is_dir() and _accepts(port):
                return address
            if time.monotonic() - t0 > timeout:
                tail = (self.place / "ray-start.log").read_text(errors="replace")[-1500:]
                self.stop()
                raise RuntimeError(f"the local Ray cluster did not come up within {timeout:g} s:\n{tail}")
            time.sleep(0.3)

    def stop(self) -> None:
        """End every process of the cluster this object started and remove its place (idempotent)."""
        if self.proc is not None:
            _end(session_processes(self.proc.pid) + ([self.proc.pid] if self.proc.poll() is None else []))
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        # the session's logs and sockets: the errors of failed tasks were reported already
        shutil.rmtree(self.place, ignore_errors=True)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _end(pids: list[int], grace: float = 1.0) -> None:
    """SIGTERM ``pids``, then SIGKILL the ones still alive after ``grace`` s."""
    pids = sorted(set(pids))
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        alive = [p for p in pids if _alive(p)]
        for p in alive:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        t0 = time.monotonic()
        while any(_alive(p) for p in alive) and time.monotonic() - t0 < wait:
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")
