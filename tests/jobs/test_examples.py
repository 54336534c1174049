"""The seeds' workloads in jobs/examples (mnist, cifar10, cats_dogs) on tiny generated files.

Each example trains from its own YAML spec, shrunk by params overrides, on files
tests/fixtures.py writes in the real formats (idx, CIFAR-10 binary batches, JPEG
folders); it completes, and resumes bit-exact after an interruption mid-epoch
(an exception from the fault hook here, a real SIGKILL for one of them in the
slow test). The readers are checked against the formats' layouts, and missing
data fails with one line naming the file and where to get it.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from colabrun import runner
from colabrun.jobs import load_spec
from colabrun.jobs.errors import SpecError, TrainingError
from colabrun.jobs.examples.cats_dogs import CatsDogsNet
from colabrun.jobs.examples.cifar10 import Cifar10Net
from colabrun.jobs.examples.datasets import (
    DatasetError,
    DatasetMissing,
    ImageFiles,
    image_folder,
    load_cifar10,
    load_mnist,
)
from colabrun.jobs.examples.mnist import MnistNet
from colabrun.jobs.spec import JobSpec
from colabrun.runner.ending import RunResult
from colabrun.state.model import Status
from tests.fixtures import (
    cifar_batch_bytes,
    cifar_records,
    mnist_arrays,
    write_cats_dogs,
    write_cifar10,
    write_mnist,
)
from tests.helpers import REPO, assert_exactly_equal, final_payload, run_cli, write_spec_file

EPOCHS = 2
POLICY = {"every_steps": 2, "every_s": None, "at_epoch_end": True, "keep_last": 2,
          "max_overhead": None}  # saves at known steps: the kills count them


@dataclass(frozen=True)
class Example:
    """One example job, shrunk for the tests."""

    module: str
    write: Callable[[Path], Path]  # writes its fixture files, returns the data_dir
    params: dict[str, Any]
    steps_per_epoch: int
    crash_step: int  # in the second epoch, the step after a save at its batch 2
    #: the commits (local) up to that save: saves are written in the background, so a
    #: real kill lands right after the commit, not at a step that may precede it
    commits: int


EXAMPLES = {
    "mnist": Example("mnist", write_mnist,  # 64 images / 8
                     {"batch_size": 8, "test_batch_size": 8, "width": 4, "hidden": 16},
                     steps_per_epoch=8, crash_step=12, commits=5),
    "cifar10": Example("cifar10", write_cifar10,  # 2 batch files of 20 records / 8
                       {"batch_size": 8, "width": 4, "hidden": 16, "train_batches": 2},
                       steps_per_epoch=5, crash_step=8, commits=4),
    "cats_dogs": Example("cats_dogs", write_cats_dogs,  # 2 x 12 images of 40x30 / 8
                         {"batch_size": 8, "val_batch_size": 8, "image_size": 32, "width": 4,
                          "hidden": 16, "workers": 0},
                         steps_per_epoch=3, crash_step=6, commits=3),
}


class Crash(Exception):
    """Stands for a runtime dying at a fault point."""


def crash_at_step(nth: int) -> Callable[[str], None]:
    seen = {"n": 0}

    def hook(point: str) -> None:
        if point == "step":
            seen["n"] += 1
            if seen["n"] == nth:
                raise Crash(f"step #{nth}")

    return hook


def example_spec(example: Example, tmp: Path, data_dir: Path | None) -> JobSpec:
    """The example's YAML spec, small, in ``tmp``, reading ``data_dir`` (None: the spec's)."""
    path = REPO / "jobs" / "examples" / f"{example.module}.yaml"
    params = {**load_spec(path).params, **example.params}
    if data_dir is not None:
        params["data_dir"] = str(data_dir)
    return load_spec(path, overrides={
        "root": str(tmp / "runs"), "local_dir": str(tmp / "local"), "supervise": False,
        "epochs": EPOCHS, "device": "cpu", "params": params, "checkpoint": POLICY,
    })


@dataclass(frozen=True)
class Trained:
    """An uninterrupted run of one example: the reference for the resume tests."""

    example: Example
    data_dir: Path
    result: RunResult
    payload: dict[str, Any]


@pytest.fixture(scope="module", params=sorted(EXAMPLES))
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Trained:
    example = EXAMPLES[request.param]
    tmp = tmp_path_factory.mktemp(example.module)
    data_dir = example.write(tmp / "data")
    spec = example_spec(example, tmp, data_dir)
    result = runner.run(spec)
    return Trained(example, data_dir, result, final_payload(tmp / "runs" / spec.name))


def test_example_trains_on_its_files(trained: Trained) -> None:
    result = trained.result
    assert result.status is Status.COMPLETED
    assert (result.epochs_done, result.global_step) == (
        EPOCHS, EPOCHS * trained.example.steps_per_epoch)
    [accuracy] = result.value.values()
    assert 0.0 <= accuracy <= 1.0


def test_example_resumes_bit_exact_after_an_interruption(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = trained.example
    spec = example_spec(example, tmp_path, trained.data_dir)
    with pytest.raises((Crash, TrainingError)):
        runner.run(spec, on_point=crash_at_step(example.crash_step))
    capsys.readouterr()
    result = runner.run(spec)
    assert "epoch 2/2 from batch 2;" in capsys.readouterr().out, "must resume mid-epoch"
    assert result.status is Status.COMPLETED
    assert_exactly_equal(final_payload(tmp_path / "runs" / spec.name), trained.payload)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "cifar10", "cats_dogs"])
def test_each_example_resumes_bit_exact_after_a_sigkill(tmp_path: Path, name: str) -> None:
    """A real SIGKILL mid-epoch, `colabrun resume` in a fresh process, compared with an
    uninterrupted run in its own process: reading, decoding and order must repeat."""
    example = EXAMPLES[name]
    data_dir = example.write(tmp_path / "data")
    payloads = []
    for run_name, kill in (("reference", None), ("killed", f"save.committed:{example.commits}")):
        spec = example_spec(example, tmp_path / run_name, data_dir)
        root = tmp_path / run_name / "runs"
        spec_file = write_spec_file(tmp_path / f"{run_name}.json", spec)
        env = {"COLABRUN_KILL_AT": kill} if kill else {}
        done = run_cli("run", str(spec_file), cwd=tmp_path, env=env)
        if kill:
            assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr)
            done = run_cli("resume", spec.name, "--root", str(root), cwd=tmp_path)
            assert "epoch 2/2 from batch 2;" in done.stdout, done.stdout
        assert done.returncode == 0, done.stderr + done.stdout
        payloads.append(final_payload(root / spec.name))
    assert_exactly_equal(payloads[1], payloads[0])


# -- missing data ---------------------------------------------------------------------


def _remove(path: Path) -> None:
    if path.is_dir():
        for child in path.iterdir():
            child.unlink()
        path.rmdir()
    else:
        path.unlink()


@pytest.mark.parametrize(("module", "missing", "says"), [
    ("mnist", "t10k-labels-idx1-ubyte", "ossci-datasets.s3.amazonaws.com/mnist"),
    ("cifar10", "cifar-10-batches-bin/data_batch_2.bin", "cifar-10-binary.tar.gz"),
    ("cats_dogs", "validation/dogs", "cats_and_dogs_filtered.zip"),
    ("mnist", None, "/content/drive/MyDrive/data/mnist"),  # params.data_dir not set
])
def test_missing_data_fails_in_one_line_saying_where_to_get_it(
    tmp_path: Path, module: str, missing: str | None, says: str
) -> None:
    example = EXAMPLES[module]
    data_dir = example.write(tmp_path / "data")
    if missing is not None:
        _remove(data_dir / missing)
    spec = example_spec(example, tmp_path, data_dir if missing else None)
    if missing is None:
        params = {k: v for k, v in spec.params.items() if k != "data_dir"}
        spec = spec.model_copy(update={"params": params})
    with pytest.raises(DatasetMissing) as raised:
        runner.run(spec)
    message = str(raised.value)
    assert "\n" not in message and says in message
    assert Path(missing or "train-images-idx3-ubyte").name in message
    assert raised.value.exit_code == 2 and isinstance(raised.value, FileNotFoundError)


# -- the readers against the formats ----------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_mnist_idx_files_read_back(tmp_path: Path, gz: bool) -> None:
    write_mnist(tmp_path, train=5, test=3, gz=gz, seed=4)
    images, labels = load_mnist(tmp_path, "train")
    expected_images, expected_labels = mnist_arrays(5, 4 + len("train"))
    assert images.dtype == torch.uint8 and images.shape == (5, 28, 28)
    assert np.array_equal(images.numpy(), expected_images)
    assert labels.dtype == torch.long and labels.tolist() == expected_labels.tolist()


def test_a_truncated_idx_file_is_refused(tmp_path: Path) -> None:
    write_mnist(tmp_path, train=5, test=3)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DatasetError, match="truncated"):
        load_mnist(tmp_path, "train")


def test_cifar10_records_keep_label_and_channel_order(tmp_path: Path) -> None:
    images, labels = cifar_records(3, seed=9)
    images[1, 0], images[1, 2] = 255, 0  # record 1: all red, no blue
    (tmp_path / "test_batch.bin").write_bytes(cifar_batch_bytes(images, labels))
    got_images, got_labels = load_cifar10(tmp_path, train=False)  # the bin folder itself
    assert got_labels.tolist() == labels.tolist()
    assert np.array_equal(got_images.numpy(), images)
    assert int(got_images[1, 0].min()) == 255 and int(got_images[1, 2].max()) == 0


def test_a_pickled_cifar10_batch_is_refused(tmp_path: Path) -> None:
    (tmp_path / "test_batch.bin").write_bytes(b"\x80\x04\x95" + bytes(100))  # a pickle
    with pytest.raises(DatasetError, match="binary version"):
        load_cifar10(tmp_path, train=False)


def test_images_are_decoded_and_resized_only_when_indexed(tmp_path: Path) -> None:
    write_cats_dogs(tmp_path, per_class=2, validation_per_class=1, size=(40, 30))
    (tmp_path / "train" / "dogs" / "dog.9.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "train" / "cats" / "._cat.0.jpg").write_bytes(b"macOS metadata")
    samples = image_folder(tmp_path / "train", ("cats", "dogs"), hint="")
    assert [(p.name, label) for p, label in samples] == [
        ("cat.0.jpg", 0), ("cat.1.jpg", 0), ("dog.0.jpg", 1), ("dog.1.jpg", 1),
        ("dog.9.jpg", 1)]
    dataset = ImageFiles(samples, size=32)  # the broken file is not read yet
    image, label = dataset[2]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    assert label.dtype == torch.float32 and float(label) == 1.0
    assert float(image.float().mean()) > float(dataset[0][0].float().mean())  # dogs brighter
    with pytest.raises(DatasetError, match=r"dog\.9\.jpg could not be read as an image"):
        dataset[4]


@pytest.mark.parametrize(("net", "shape", "out"), [
    (MnistNet, (2, 1, 28, 28), (2, 10)),
    (Cifar10Net, (2, 3, 32, 32), (2, 10)),
    (CatsDogsNet, (2, 3, 150, 150), (2,)),
], ids=["mnist", "cifar10", "cats_dogs"])
def test_the_full_size_nets_take_the_real_image_sizes(
    net: Callable[[], torch.nn.Module], shape: tuple[int, ...], out: tuple[int, ...]
) -> None:
    """The tests train narrow nets on small images; the defaults must fit the real data."""
    with torch.no_grad():
        assert net().eval()(torch.zeros(shape)).shape == out


def test_a_too_small_image_size_is_refused() -> None:
    with pytest.raises(SpecError, match="image_size 20 is too small"):
        CatsDogsNet(image_size=20)
