"""Progress bars only where they fit: a terminal (or when asked), never with TQDM_DISABLE / HF_HUB_DISABLE_PROGRESS_BARS."""

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import torch

from pspnet_lib._progress import progress_bar, progress_enabled, tqdm_class
from pspnet_lib.engine.evaluate import evaluate

from ._engine_helpers import ColourBlocks, tiny_pspnet

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import logging, sys, time
from pspnet_lib._progress import progress_bar
logging.basicConfig(level=logging.INFO, format="LOG %(message)s")
with progress_bar(range(3), desc="work", mininterval=0) as bar:
    for i in bar:
        logging.getLogger("pspnet_lib.test").info("line %d", i)
print("done", flush=True)
"""


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_progress_enabled_rules(clean_env):
    assert progress_enabled(None, stream=_Terminal()) is True
    assert progress_enabled(None, stream=io.StringIO()) is False  # a pipe or file: no bar
    assert progress_enabled(True, stream=io.StringIO()) is True  # asked for
    assert progress_enabled(False, stream=_Terminal()) is False
    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        clean_env.setenv(name, "1")
        assert progress_enabled(None, stream=_Terminal()) is False
        clean_env.setenv(name, "0")
        assert progress_enabled(None, stream=_Terminal()) is True
        clean_env.delenv(name)
    with pytest.raises(TypeError, match="progress must be None"):
        progress_enabled("yes")
    # what huggingface_hub downloads get (hf_hub_download(tqdm_class=...)): silent off a terminal
    silent = tqdm_class(None)
    assert (
        silent is not tqdm_class(True)
        and silent(total=3).disable
        and not tqdm_class(True)(total=3, file=io.StringIO()).disable
    )


def _run(env_extra, *, terminal):
    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    env.update(env_extra, PYTHONPATH=str(REPO))
    if not terminal:
        done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
        return done.stdout + done.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real terminal has a size
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_bar_on_a_terminal_with_logs_above_it():
    out = _run({}, terminal=True)
    assert "work" in out and "3/3" in out and "done" in out
    # each log line once, formatted by the application's handler, printed through tqdm.write
    assert out.count("line 2") == 1 and "LOG line 2" in out


@pytest.mark.parametrize("env", [{}, {"TQDM_DISABLE": "1"}])
def test_no_bar_without_a_terminal(env):
    out = _run(env, terminal=False)
    assert "done" in out and "LOG line 2" in out
    assert "work" not in out and "\r" not in out and "it/s" not in out


def test_no_bar_on_a_terminal_with_tqdm_disable():
    out = _run({"TQDM_DISABLE": "1"}, terminal=True)
    assert "done" in out and "LOG line 2" in out and "work" not in out and "3/3" not in out


def test_library_entry_point_quiet_when_not_a_terminal(capsys, clean_env):
    torch.manual_seed(0)
    evaluate(tiny_pspnet(), ColourBlocks(2, 32, seed=1, augment=False))  # progress=None: automatic
    captured = capsys.readouterr()
    assert "eval" not in captured.err and "\r" not in captured.err
    with progress_bar(total=2, desc="asked", progress=True, file=sys.stderr, mininterval=0) as bar:
        bar.update(2)
    assert "asked" in capsys.readouterr().err
