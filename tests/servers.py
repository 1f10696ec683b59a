"""Real `deepcodes serve` processes on loopback for the service tests, and the index they serve."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

START_TIMEOUT = 180.0


def mnist_files(folder: Path, n: int = 2000, bits: int = 32):
    """An ITQ Hamming index over ``n`` MNIST training images (ids 0..n-1), with the images and labels
    as .npy files for ``--gallery``/``--labels``; returns (index path, vectors path, labels path, X, y)."""
    from deepcodes.coders import ITQ
    from deepcodes.data.datasets import load_mnist
    from deepcodes.index import HammingIndex

    X_train, y_train, _, _ = load_mnist()
    X = np.ascontiguousarray(X_train[:n], dtype=np.float32) / 255.0
    y = y_train[:n].astype(np.int64)
    index = HammingIndex(coder=ITQ(n_bits=bits, random_state=0).fit(X))
    index.add(X, ids=np.arange(n))
    folder.mkdir(parents=True, exist_ok=True)
    index.save(folder / "mnist.dcx")
    np.save(folder / "mnist.npy", X)
    np.save(folder / "labels.npy", y)
    return folder / "mnist.dcx", folder / "mnist.npy", folder / "labels.npy", X, y


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``deepcodes serve ARGS`` in a subprocess on a free loopback port; ``client`` talks to it."""

    def __init__(self, index: Path, data_dir: Path, *args: str, token: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"{data_dir.name}-server-{self.port}.log"
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
        env.pop("DEEPCODES_TOKEN", None)
        cmd = [sys.executable, "-m", "deepcodes.cli", "serve", str(index), "--port", str(self.port),
               "--data-dir", str(data_dir), *args] + (["--token", token] if token else [])
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=60.0)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server did not start in {START_TIMEOUT} s:\n{self.output()}")
            time.sleep(0.2)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.client.close()
        self._log.close()

    def stop(self) -> None:
        """SIGTERM: a clean stop (last snapshot)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.client.close()
        self._log.close()
