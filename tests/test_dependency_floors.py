"""Every dependency floor in pyproject.toml is a version that works.

``constraints/lowest.txt`` lists the lowest version of each light dependency that CI
checks on its Python; a pin above its floor says why (no wheel for this Python). The
slow test installs exactly those versions into a fresh venv beside the machine's torch,
installs colabrun there without dependencies, and trains: a supervised job whose worker
is killed and restarted, so it resumes from a checkpoint. Then a few tests run there too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.helpers import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

LOWEST = REPO / "constraints" / "lowest.txt"
#: dependencies the check leaves at the machine's version, and why
NOT_CHECKED = {
    "torch": "CI keeps constraints/dev.txt's torch: any other pulls GBs of CUDA wheels",
    "tomli": "only Python 3.10 needs it",
}
#: the module each pinned distribution is imported as
MODULES = {"pyyaml": "yaml"}
#: what pip prints when it cannot reach the package index
NETWORK_ERROR = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
    r"resolution|Name or service not known|Network is unreachable|No route to host|"
    r"ConnectTimeoutError|ReadTimeoutError|Connection refused|ProxyError|Could not fetch URL")
#: what the build of colabrun's wheel needs from the working tree
BUILD_INPUTS = ("pyproject.toml", "README.md", "colabrun", "runner", "jobs", "state")
#: the quick tests run in the venv: specs, state files, retries, worker messages, the
#: log follower (watchdog) and the progress bars (tqdm)
QUICK_TESTS = ("tests/jobs/test_spec.py", "tests/state/test_statefile.py",
               "tests/state/test_resilience.py", "tests/runner/watch/test_messages.py",
               "tests/runner/commands/test_logs.py", "tests/runner/display/test_progress.py")

JOB = '''\
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset


def train(run):
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(96, 4, generator=generator),
                         torch.randn(96, 1, generator=generator))
    loader = DataLoader(data, batch_size=8, shuffle=True)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=run.params["lr"])
    run.track(model=model, optimizer=opt)
    for _ in run.epochs():
        for x, y in run.batches(loader):
            opt.zero_grad()
            noise = float(np.random.rand()) * 1e-3  # numpy's RNG: checkpointed too
            loss = torch.nn.functional.mse_loss(model(x), y) + noise
            loss.backward()
            opt.step()
            run.step(loss=loss.item())
    return model.weight.sum().item()
'''

IMPORT_CHECK = '''\
import importlib, importlib.metadata, json, sys
import colabrun, colabrun.runner.commands.cli, colabrun.runner.session
found = {"colabrun": colabrun.__file__}
for dist, module in json.loads(sys.argv[1]).items():
    found[dist] = [importlib.metadata.version(dist), importlib.import_module(module).__file__]
print(json.dumps(found))
'''


def lowest_pins() -> dict[str, tuple[Version, list[str]]]:
    """constraints/lowest.txt: each name's pinned version and the comments above it."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    comments: list[str] = []
    for line in LOWEST.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            comments.append(line)
        elif line.strip():
            name, _, version = line.partition("==")
            assert version, f"{LOWEST.name}: {line!r} is not NAME==VERSION"
            pins[name.strip().lower()] = (Version(version.strip()), comments)
            comments = []
    return pins


def declared() -> dict[str, Requirement]:
    """pyproject.toml's dependencies, by lower-case name."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = (Requirement(text) for text in project["dependencies"])
    return {req.name.lower(): req for req in requirements}


def floor_of(requirement: Requirement) -> Version:
    (floor,) = (Version(s.version) for s in requirement.specifier if s.operator == ">=")
    return floor


def test_the_lowest_pins_are_the_declared_floors_or_say_why() -> None:
    pins, requirements = lowest_pins(), declared()
    assert set(pins) == set(requirements) - set(NOT_CHECKED), (
        f"{LOWEST.name} and pyproject.toml name different dependencies")
    for name, (pin, comments) in pins.items():
        requirement = requirements[name]
        assert requirement.specifier.contains(pin, prereleases=True), (
            f"{name}=={pin} is outside pyproject.toml's {requirement}")
        if pin != floor_of(requirement):
            assert any(c.startswith(f"# {name}:") for c in comments), (
                f"{name}=={pin} is not the floor of {requirement}: a '# {name}:' comment "
                f"above it must say why")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the test run's own variables (xdist's, a kill point)."""
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith(("PYTEST_", "COLABRUN_"))}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def pip_install(python: Path, *args: str, timeout: float = 300) -> None:
    """``pip install ARGS`` into the venv of ``python``: skip the test when the package
    index cannot be reached, fail on any other error."""
    command = [sys.executable, "-m", "pip", "--python", str(python), "install",
               "--disable-pip-version-check", "--no-input", "--retries", "1",
               "--timeout", "30", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env=clean_env())
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip install did not finish in {timeout:.0f} s: is the package index "
                    f"reachable? ({' '.join(args)})")
    out = done.stdout + done.stderr
    network = NETWORK_ERROR.search(out)
    if done.returncode != 0 and network is not None:
        pytest.skip(f"the package index cannot be reached: pip says {network[0]}")
    assert done.returncode == 0, f"pip install {' '.join(args)} failed:\n{out}"


def working_tree_copy(target: Path) -> Path:
    """What builds colabrun's wheel, as the working tree has it (uncommitted files too),
    copied: a build in the repository would write build/ and the egg-info there."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard", *BUILD_INPUTS], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source, copy = REPO / name, target / name
        if not source.is_symlink() and not source.exists():
            continue  # deleted in the working tree, not yet in git
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            copy.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, copy)
    return target


def run_in(python: Path, *args: str, cwd: Path, timeout: float = 300,
           **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=clean_env(**env))


@pytest.mark.slow
@pytest.mark.skipif(sys.version_info[:2] != (3, 11),
                    reason="constraints/lowest.txt holds versions with wheels for Python 3.11, "
                           "CI's Python")
def test_colabrun_trains_with_its_lowest_dependency_versions(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # system site-packages: torch, and what the tests need (pytest, xdist), come from there
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    pip_install(python, "--only-binary", ":all:", "-r", str(LOWEST))
    pip_install(python, "--no-deps", "--no-build-isolation", "--no-index",
                str(working_tree_copy(tmp_path / "src")))

    # 1. the venv's versions are the pinned ones, not the machine's, and colabrun is its own
    pins = lowest_pins()
    modules = {name: MODULES.get(name, name) for name in pins}
    checked = run_in(python, "-c", IMPORT_CHECK, json.dumps(modules), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    found = json.loads(checked.stdout)
    site = str(venv / "lib")
    assert found.pop("colabrun").startswith(site), "colabrun was not imported from the venv"
    for name, (version, file) in found.items():
        assert (Version(version), file.startswith(site)) == (pins[name][0], True), (
            f"{name} {version} from {file}: the venv does not hold {name}=={pins[name][0]}")

    # 2. a supervised job from a spec file, its worker killed at step 18 and restarted:
    # it resumes from a checkpoint (numpy's RNG state included) and completes
    work = tmp_path / "work"
    work.mkdir()
    (work / "floors_job.py").write_text(JOB)
    (work / "floors.yaml").write_text(
        "name: floors\nentrypoint: floors_job:train\nepochs: 2\nseed: 0\nparams: {lr: 0.05}\n"
        "checkpoint: {every_steps: 5, every_s: null, max_overhead: null, keep_last: 2}\n"
        "supervise: true\n"
        f"root: {json.dumps(str(tmp_path / 'runs'))}\n"  # a JSON string is a YAML string
        f"local_dir: {json.dumps(str(tmp_path / 'local'))}\n")
    trained = run_in(venv / "bin" / "colabrun", "run", "floors.yaml", cwd=work,
                     COLABRUN_KILL_AT="step:18,step:9999")
    out = trained.stdout + trained.stderr
    assert trained.returncode == 0, out
    resumed = re.search(r"resuming from step-\S+ \(step (\d+), ", out)
    assert resumed is not None and 0 < int(resumed.group(1)) <= 18, out
    assert "job 'floors' completed: 2/2 epochs, step 24" in out, out

    # 3. a few quick tests (colabrun from the repository, the dependencies from the venv)
    tests = run_in(python, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", "-q",
                   "-m", "not slow", f"--basetemp={tmp_path / 'pytest'}", *QUICK_TESTS,
                   cwd=REPO, timeout=600)
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-3000:]
