import subprocess
import sys
import time
from pathlib import Path

import pytest

from .processes import run_tree


def _alive(pid: int) -> bool:
    """Running, not a zombie (a container's init may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.timeout(60)
def test_a_deadline_ends_what_the_command_started(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    grandchild = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    launcher = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {grandchild!r}]).wait()"
    with pytest.raises(subprocess.TimeoutExpired):
        run_tree([sys.executable, "-c", launcher], timeout=5)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the grandchild outlived the deadline"


def test_output_and_status_come_back():
    res = run_tree([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"], timeout=60)
    assert (res.returncode, res.stdout.strip(), res.stderr.strip()) == (3, "out", "err")
