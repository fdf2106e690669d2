"""Failures a user causes on the file system end a rule with one line naming the path and the fix, not a traceback:
real operating-system errors (EACCES from /proc/sys even for root, EISDIR, ENOTDIR, ENOSPC from /dev/full)."""

from __future__ import annotations

import logging

import h5py
import pytest

from pertpipe.io import script_step


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    saved = list(root.handlers)
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved:
        root.addHandler(h)


def _write(path: str, n: int = 1 << 16) -> None:
    with open(path, "w") as f:
        f.write("x" * n)


@pytest.mark.parametrize("action,expected", [
    (lambda d: _write("/proc/sys/kernel/ostype"), "permission denied: /proc/sys/kernel/ostype. Fix: make it "
                                                 "readable/writable"),
    (lambda d: _write(str(d)), "is a folder where a file is expected. Fix: give the file's path"),
    (lambda d: _write("/etc/hostname/x"), "a part of /etc/hostname/x is a file where a folder is expected"),
    (lambda d: _write("/dev/full"), "no space left on the device holding an output of this rule. Fix: free space"),
    (lambda d: h5py.File("/proc/sys/kernel/ostype", "w"), "permission denied: /proc/sys/kernel/ostype"),
])
def test_one_line_for_the_file_system(tmp_path, restore_logging, action, expected):
    log = tmp_path / "rule.log"
    with pytest.raises(SystemExit) as ex, script_step(log, "some_rule"):
        action(tmp_path)
    text = log.read_text()
    assert ex.value.code == 1 and "some_rule failed: " in text and expected in text
    assert "Traceback" not in text and "unexpected error" not in text
