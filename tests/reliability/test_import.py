"""Importing cbtgym (and the judges) prints nothing and changes no environment variable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE = """
import json, os, sys
before = dict(os.environ)
import cbtgym, rewards
after = dict(os.environ)
changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
sys.stderr.write("@@" + json.dumps({"changed": changed, "file": cbtgym.__file__}))
"""


def test_import_prints_nothing_and_sets_no_environment():
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    noise, _, report = done.stderr.rpartition("@@")
    result = json.loads(report)
    assert result["file"].startswith(str(REPO)), "the probe must import this checkout"
    assert done.stdout == "" and noise == ""
    assert result["changed"] == []  # gymnasium alone would add PYGAME_HIDE_SUPPORT_PROMPT
