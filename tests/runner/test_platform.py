"""Where we run, tier 2: a child interpreter's first statements (real ``python -c``
processes, no colabrun imported in them) and a forked child's parent check."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from colabrun.runner.platform import ORPHANED_EXIT, child_entry, die_with_parent
from colabrun.runner.save.child import fork_child

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")

#: the child's body: its death signal (PR_GET_PDEATHSIG), and whether colabrun is imported
REPORT = ("import ctypes, sys\n"
          "sig = ctypes.c_int(0)\n"
          "ctypes.CDLL('libc.so.6').prctl(2, ctypes.byref(sig))\n"
          "print(sig.value, 'colabrun' in sys.modules, sys.argv[2:])\n")


def _start(parent: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", child_entry(REPORT), str(parent), "x"],
                          capture_output=True, text=True, timeout=60)


@linux
def test_a_child_asks_to_die_with_its_parent_before_anything_else() -> None:
    done = _start(os.getpid())
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(maxsplit=1) == ["9", "False ['x']\n"], (
        "SIGKILL on the parent's death, asked with nothing of colabrun imported; "
        "the child's own arguments follow the parent's pid")


def test_a_child_whose_parent_is_not_the_one_named_exits_at_once() -> None:
    done = _start(os.getpid() + 1_000_000)  # no process has it: the parent "died" already
    assert done.returncode == ORPHANED_EXIT
    assert done.stdout == "", "the child's own code never ran"


@linux
def test_a_forked_child_whose_parent_is_another_exits_at_once() -> None:
    pid = fork_child()
    if pid == 0:  # the child: its parent is this test's process, not the one named
        try:
            die_with_parent(os.getppid() + 1_000_000)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == ORPHANED_EXIT


@linux
def test_a_forked_child_of_the_parent_named_goes_on() -> None:
    parent = os.getpid()
    pid = fork_child()
    if pid == 0:
        try:
            die_with_parent(parent)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_deterministic_algorithms_are_asked_for_without_importing_the_inductor() -> None:
    """torch's own call imports torch._inductor.config (1.15 s on this machine) at every
    worker's start; colabrun's sets the inductor's flag only once something imported it."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from colabrun.runner.platform import use_deterministic_algorithms\n"
        "use_deterministic_algorithms(True)\n"
        "assert 'torch._inductor.config' not in sys.modules\n"
        "assert torch.are_deterministic_algorithms_enabled()\n"
        "assert torch.is_deterministic_algorithms_warn_only_enabled()\n"
        "import torch._inductor.config as config\n"
        "use_deterministic_algorithms(False)\n"
        "assert config.deterministic is False\n"
        "assert not torch.are_deterministic_algorithms_enabled()\n"
        "use_deterministic_algorithms(True)\n"
        "assert config.deterministic is True\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
