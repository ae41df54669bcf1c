"""What the benchmarks share: a free port, a median with its spread, and ``hounsfield serve`` from a source
tree on a fresh data directory (the server the benchmarks measure, started as a user would)."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


class Serve:
    """``hounsfield serve`` from ``src`` on a fresh data directory."""

    def __init__(self, src: Path, work: Path, config: str = "") -> None:
        self.src, self.work = src, work
        self.data = work / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.cfg = work / "cfg.toml"
        self.cfg.write_text(config)
        self.dicom, self.http = free_port(), free_port()
        self.env = {**os.environ, "PYTHONPATH": str(src)}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def cli(self, *args: str, stdin: str | None = None) -> str:
        out = subprocess.run([sys.executable, "-m", "hounsfield", *args, "--data-dir", str(self.data),
                              "--config", str(self.cfg)], input=stdin, capture_output=True, text=True,
                             env=self.env, check=True)
        return out.stdout

    def start(self) -> Serve:
        self.log = open(self.work / "serve.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "hounsfield", "serve", "--data-dir", str(self.data),
                                      "--config", str(self.cfg), "--dicom-port", str(self.dicom),
                                      "--http-port", str(self.http)], stdout=self.log, stderr=subprocess.STDOUT,
                                     env=self.env, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.work / "serve.log").read_text()[-2000:]
            try:
                if requests.get(f"{self.url}/health", timeout=1).ok:
                    with socket.create_connection(("127.0.0.1", self.dicom), timeout=1):
                        return self
            except (requests.RequestException, OSError):
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)
        self.log.close()
