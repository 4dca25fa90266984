"""Ctrl-C (issue 16 item 9): ``dmdet-infer`` stops within about a second, even in the middle of a network call,
prints one line, leaves no output and exits 130; with ``--workers`` too, without a traceback or dask's logs.

Each test starts ``dmdet-infer`` in its own session and sends SIGINT to the whole process group, as a terminal
does, once the network has started (a ``sitecustomize`` on PYTHONPATH marks the first network call in any process,
dask workers included).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

SITECUSTOMIZE = """
import os
if os.environ.get("DMDET_TEST_MARK"):
    from pathlib import Path

    from dmdet_infer import model

    forward = model.Model._forward

    def marked(self, *args):
        Path(os.environ["DMDET_TEST_MARK"]).touch()
        return forward(self, *args)

    model.Model._forward = marked
"""


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory) -> Path:
    """A stack that the shipped model takes several seconds on, in one network call (whole volume)."""
    path = tmp_path_factory.mktemp("slow") / "slow.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.poisson(20.0, (32, 256, 256)).astype(np.uint16), imagej=True,
                     metadata={"axes": "ZYX"})
    return path


def _default_sigint() -> None:
    """Ctrl-C as a terminal delivers it: a job started in the background by a shell (``cmd &``) inherits SIGINT
    ignored, and Python then never installs its handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def sigint_handled():
    """Python's own SIGINT handler in this process for the test, even when the test run was started with SIGINT
    ignored (``_thread.interrupt_main`` does nothing then)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _interrupt(tmp_path: Path, *args: str) -> tuple[int, str, float, Path]:
    """Run dmdet-infer, send SIGINT to its process group once the network runs; (exit code, stderr, seconds from
    the signal to the exit, the output path)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    mark = tmp_path / "network-started"
    out = tmp_path / "spots.csv"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DMDET_TEST_MARK": str(mark),
           "PYTHONPATH": os.pathsep.join([str(hook), str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "dmdet_infer.cli", *args, "-o", str(out), "-q"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 240
        while not mark.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the network never started"
            time.sleep(0.05)
        time.sleep(0.5)  # well inside the network call
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        return proc.returncode, err, time.monotonic() - sent, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _check(code: int, err: str, seconds: float, out: Path, limit: float) -> None:
    assert code == 130, (code, err)
    lines = err.strip().splitlines()
    assert lines == ["dmdet-infer: interrupted"], err
    assert seconds < limit, f"took {seconds:.1f} s to stop"
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".spots.csv")]  # no temporary left


def test_ctrl_c_stops_within_a_second_inside_a_network_call(tmp_path, slow_stack):
    code, err, seconds, out = _interrupt(tmp_path, str(slow_stack), "--device", "cpu")
    _check(code, err, seconds, out, limit=2.0)


def test_ctrl_c_with_workers_is_one_line_without_dask_logs(tmp_path, slow_stack):
    pytest.importorskip("distributed")
    code, err, seconds, out = _interrupt(tmp_path, str(slow_stack), "--device", "cpu", "--workers", "1")
    _check(code, err, seconds, out, limit=5.0)


def test_model_run_raises_keyboardinterrupt_at_once_and_the_call_is_aborted(sigint_handled):
    """The Python API too: Ctrl-C (KeyboardInterrupt in the main thread) does not wait for a long network call."""
    import _thread
    import threading

    from dmdet_infer.model import Model, cancel_runs

    model = Model(device="cpu")
    block = np.random.default_rng(0).normal(size=(32, 256, 256)).astype(np.float32)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    start = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        model.run(block)
    assert time.monotonic() - start < 1.5
    assert cancel_runs(timeout=2.0)  # the aborted call has returned
    assert model.run(block[:4, :32, :32]).shape == (4, 32, 32)  # and the session still works
