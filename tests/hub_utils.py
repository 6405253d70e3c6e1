"""Shared helpers of the hub tests: reference checkpoint files, a local HTTP server, a Hub cache."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from .reference import load_case, reference_state_dict

SMALL = dict(head_channels=32, aux_channels=16, ppm_channels=8)


def write_mmseg_checkpoint(path: Path, case: str = "mmseg_r18_d8") -> dict:
    """The reference case's seeded weights saved as mmsegmentation saves a checkpoint; returns the case."""
    data = load_case(case)
    sd = reference_state_dict(data["keys"], data["meta"]["seed"])
    torch.save({"meta": {"mmseg_version": "1.2.2", "iter": 80000}, "state_dict": sd}, path)
    return data


class _Handler(SimpleHTTPRequestHandler):
    """Serves the server's directory; ``server.mode`` can make it cut a response short ("truncate":
    the full Content-Length, a third of the body), stall, send about 10 kB/s ("trickle"), or answer
    with an HTML page ("html" with status 200, "html_error" with 404)."""

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.server.mode == "normal":
            return super().do_GET()
        if self.server.mode in ("html", "html_error"):  # what an expired link or a login wall returns
            page = b"<!DOCTYPE html>\n<html><head><title>Not Found</title></head><body>gone</body></html>\n"
            self.send_response(200 if self.server.mode == "html" else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.server.mode == "truncate":
            self.wfile.write(data[: len(data) // 3])  # then close: an interrupted transfer
        elif self.server.mode == "trickle":  # about 10 kB/s, never idle long enough for a socket timeout
            for start in range(0, len(data), 1000):
                if self.server.release.is_set():
                    break
                self.wfile.write(data[start : start + 1000])
                self.wfile.flush()
                time.sleep(0.1)
        elif self.server.mode == "stall":
            self.wfile.write(data[: 1 << 20])
            self.wfile.flush()
            self.server.stalled.set()
            self.server.release.wait(timeout=30)
        self.close_connection = True


@contextlib.contextmanager
def serve_directory(directory: Path, mode: str = "normal"):
    """A real HTTP server on 127.0.0.1 (random free port) serving ``directory``; yields the server."""

    def handler(*args, **kwargs):
        return _Handler(*args, directory=str(directory), **kwargs)

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.requests = []
    server.mode = mode
    server.stalled = threading.Event()
    server.release = threading.Event()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def make_hf_cache(cache: Path, repo_id: str, folder: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Lay out ``folder``'s files as huggingface_hub's cache of ``repo_id`` at ``commit``.

    ``<cache>/models--org--repo/{blobs/, snapshots/<commit>/<files>, refs/<ref>}``, files as
    blobs with snapshot symlinks, exactly as ``hf_hub_download`` leaves them.
    """
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    import hashlib

    for file in folder.iterdir():
        blob = repo_dir / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, blob)
        link = snapshot / file.name
        link.unlink(missing_ok=True)
        link.symlink_to(Path("..") / ".." / "blobs" / blob.name)
    (repo_dir / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo_dir / "refs" / ref).write_text(commit)
    return snapshot


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
