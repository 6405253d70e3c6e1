"""Progress bars only where they fit: a terminal (or when asked), never with TQDM_DISABLE / huggingface_hub's switch."""

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
from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

from pspnet_lib._progress import progress_bar, tqdm_class
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


def _drawn(progress, file) -> bool:
    with progress_bar(total=3, progress=progress, file=file) as bar:
        return not bar.disable


def test_progress_rules(clean_env):
    # tqdm's disable=None: a bar on a terminal only (TQDM_DISABLE, read by tqdm at import: the subprocess tests)
    assert _drawn(None, _Terminal()) is True
    assert _drawn(None, io.StringIO()) is False  # a pipe or file: no bar
    assert _drawn(True, io.StringIO()) is True  # asked for
    assert _drawn(False, _Terminal()) is False
    disable_progress_bars()  # huggingface_hub's switch
    try:
        assert _drawn(None, _Terminal()) is False and _drawn(True, io.StringIO()) is True
    finally:
        enable_progress_bars()
    with pytest.raises(TypeError, match="progress must be None"):
        _drawn("yes", _Terminal())
    # what huggingface_hub downloads get (hf_hub_download(tqdm_class=...)): the same rules, and
    # huggingface_hub's own disable=True (its switch, its log level) is kept
    automatic, asked = tqdm_class(None), tqdm_class(True)
    assert automatic(total=3, file=io.StringIO()).disable and not automatic(total=3, file=_Terminal()).disable
    assert not asked(total=3, file=io.StringIO()).disable and asked(total=3, file=io.StringIO(), disable=True).disable
    assert tqdm_class(False)(total=3, file=_Terminal()).disable and tqdm_class(None) is automatic


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


@pytest.mark.parametrize("env", [{"TQDM_DISABLE": "1"}, {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}])
def test_no_bar_on_a_terminal_with_a_disabling_switch(env):
    out = _run(env, terminal=True)
    assert "done" in out and "LOG line 2" in out and "work" not in out and "3/3" not in out


def test_library_entry_point_quiet_when_not_a_terminal(capsys, clean_env):
    torch.manual_seed(0)
    evaluate(tiny_pspnet(), ColourBlocks(2, 32, seed=1, augment=False))  # progress=None: automatic
    captured = capsys.readouterr()
    assert "eval" not in captured.err and "\r" not in captured.err
    with progress_bar(total=2, desc="asked", progress=True, file=sys.stderr, mininterval=0) as bar:
        bar.update(2)
    assert "asked" in capsys.readouterr().err
