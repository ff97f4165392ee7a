"""Run a command and everything it starts, with a deadline that ends all of it."""

from __future__ import annotations

import os
import signal
import subprocess


def run_tree(argv: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(argv, capture_output=True, text=True)`` whose timeout kills the whole process group.

    ``subprocess.run`` kills only its child on timeout: the processes a launcher started (accelerate's
    torchrun workers, vLLM's engine core) would go on computing beside the tests that follow.
    """
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(argv, timeout, out, err) from None
    finally:
        if proc.poll() is None:  # interrupted in communicate (pytest-timeout, Ctrl-C): no process is left behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
