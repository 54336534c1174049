"""The checkpoint store on a real ``tmp_path``: the commit protocol under faults,
verification of torn/truncated/flipped checkpoints, safe loading, deletion."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from colabrun.jobs.errors import CheckpointError, StorageError
from colabrun.runner.train.plan import plan_resume
from colabrun.state.checkpoints import (
    ROTATE_POINTS,
    SAVE_POINTS,
    CheckpointStore,
    checkpoint_name,
    free_name,
    parse_checkpoint_name,
)
from colabrun.state.digests import HASH_PIECE_BYTES
from colabrun.state.manifest import (
    MANIFEST_NAME,
    MANIFEST_SCHEMA_VERSION,
    PAYLOAD_NAME,
    Manifest,
    ManifestFile,
)
from colabrun.state.verified import PieceMismatch
from tests.helpers import assert_exactly_equal
from tests.state.test_storage import FailingFs, hash_list_of, storage_with


class Killed(Exception):
    """Stands for the process dying at a named point."""


def payload_for(step: int) -> dict[str, Any]:
    return {"tracked": {"w": torch.arange(64, dtype=torch.float32) * step,
                        "b": torch.tensor([step])},
            "extra": {"step": step}}


def commit(store: CheckpointStore, step: int, generation: int = 1) -> Manifest:
    return store.commit(payload_for(step), step=step, epoch=step // 10, batch=step % 10,
                        generation=generation, created_at=1000.0 + step, meta={"k": "v"})


def committed_folders(store: CheckpointStore) -> list[Path]:
    """Folders under a final (checkpoint) name."""
    if not store.dir.exists():
        return []
    return sorted(p for p in store.dir.iterdir() if parse_checkpoint_name(p.name))


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "digits"
    folder.mkdir()
    return folder


@pytest.fixture
def store(job_dir: Path) -> CheckpointStore:
    return CheckpointStore(job_dir, storage_with())


# -- names -------------------------------------------------------------------------


def test_names_roundtrip_and_junk_does_not_parse() -> None:
    assert checkpoint_name(450, 2) == "step-000000450-g0002"
    assert checkpoint_name(450, 2, 1) == "step-000000450-g0002-r1"
    assert parse_checkpoint_name("step-000000450-g0002") == (450, 2, 0)
    assert parse_checkpoint_name("step-000000450-g0002-r3") == (450, 2, 3)
    for junk in (".tmp-step-000000450-g0002-1a2b3c", "step-450-g2", "notes",
                 "step-000000450-g0002 (1)", "step-000000450-g0002-rx"):
        assert parse_checkpoint_name(junk) is None


def test_a_taken_name_gets_the_first_free_retry() -> None:
    assert free_name(set(), 450, 2) == "step-000000450-g0002"
    taken = {"step-000000450-g0002", "step-000000450-g0002-r1", "step-000000450-g0002-r3"}
    assert free_name(taken, 450, 2) == "step-000000450-g0002-r2"
    assert free_name(taken, 450, 3) == "step-000000450-g0003"


# -- commit ------------------------------------------------------------------------


def test_commit_creates_named_folder_with_payload_and_manifest(store: CheckpointStore) -> None:
    manifest = commit(store, 12, generation=3)

    folder = store.dir / "step-000000012-g0003"
    assert manifest.name == folder.name
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_NAME, PAYLOAD_NAME]
    assert [p.name for p in store.dir.iterdir()] == [folder.name]  # no temporary left
    payload = (folder / PAYLOAD_NAME).read_bytes()
    on_disk = Manifest.model_validate_json((folder / MANIFEST_NAME).read_bytes())
    assert on_disk == manifest
    digest = hash_list_of(payload, HASH_PIECE_BYTES)
    assert manifest.files == (ManifestFile(path=PAYLOAD_NAME, size_bytes=len(payload),
                                           sha256=digest, piece_bytes=HASH_PIECE_BYTES,
                                           pieces=(hashlib.sha256(payload).hexdigest(),)),)
    assert (manifest.step, manifest.epoch, manifest.batch, manifest.generation) == (12, 1, 2, 3)
    assert manifest.meta == {"k": "v"}
    record = manifest.record()
    assert (record.name, record.step, record.size_bytes, record.sha256) == (
        folder.name, 12, len(payload), digest)
    assert store.list_names() == [folder.name]


def test_commit_passes_the_save_points_in_order(job_dir: Path) -> None:
    points: list[str] = []

    commit(CheckpointStore(job_dir, storage_with(), on_point=points.append), 5)

    assert points == list(SAVE_POINTS)


def test_committed_checkpoint_verifies_and_loads_exactly(store: CheckpointStore) -> None:
    name = commit(store, 7).name

    assert store.verify(name) == store.read_manifest(name)
    assert_exactly_equal(store.load_payload(name), payload_for(7))


def test_name_collision_gets_a_retry_suffix(store: CheckpointStore) -> None:
    first = commit(store, 10, generation=2).name
    second = commit(store, 10, generation=2).name
    third = commit(store, 10, generation=2).name

    assert (first, second, third) == ("step-000000010-g0002", "step-000000010-g0002-r1",
                                      "step-000000010-g0002-r2")
    for name in (first, second, third):
        store.verify(name)
    assert sorted(store.list_names()) == [first, second, third]


#: (seam, path it fails on, which call fails first)
FAULTS = [
    ("write", PAYLOAD_NAME, 1),
    ("write", PAYLOAD_NAME, 2),  # mid-stream: torch.save turns the OSError into a RuntimeError
    ("write", MANIFEST_NAME, 1),
    ("fsync", PAYLOAD_NAME, 1),
    ("fsync", MANIFEST_NAME, 1),
    ("fsync_dir", ".tmp-", 1),
    ("replace", None, 1),
]


@pytest.mark.parametrize(("seam", "match", "nth"), FAULTS)
def test_failed_commit_leaves_nothing_under_a_final_name(
    job_dir: Path, seam: str, match: str | None, nth: int
) -> None:
    good = commit(CheckpointStore(job_dir, storage_with()), 5).name
    fs = FailingFs(seam, err=errno.ENOSPC, match=match, nth=nth, times=99)
    store = CheckpointStore(job_dir, storage_with(fs))

    with pytest.raises(StorageError) as info:
        commit(store, 10)

    assert info.value.errno == errno.ENOSPC
    assert fs.counts[seam] >= nth  # the fault really fired
    assert not (store.dir / checkpoint_name(10, 1)).exists()
    assert [p.name for p in committed_folders(store)] == [good]
    reader = CheckpointStore(job_dir, storage_with())
    assert reader.list_names() == [good]
    assert plan_resume([], reader.list_names()).candidates == (good,)
    reader.verify(good)
    assert_exactly_equal(reader.load_payload(good), payload_for(5))
    # the temporary may remain; it is cleared on the next start
    reader.discard_uncommitted()
    assert [p.name for p in store.dir.iterdir()] == [good]


@pytest.mark.parametrize("point", SAVE_POINTS)
def test_killed_at_each_save_point_commits_all_or_nothing(job_dir: Path, point: str) -> None:
    def die(at: str) -> None:
        if at == point:
            raise Killed(at)

    with pytest.raises(Killed):
        commit(CheckpointStore(job_dir, storage_with(), on_point=die), 10)

    reader = CheckpointStore(job_dir, storage_with())
    if point == SAVE_POINTS[-1]:  # after the rename it is committed
        assert reader.list_names() == [checkpoint_name(10, 1)]
        assert_exactly_equal(reader.load_payload(reader.verify(checkpoint_name(10, 1)).name),
                             payload_for(10))
    else:
        assert reader.list_names() == []
        assert committed_folders(reader) == []



def test_an_upload_passes_the_same_save_points_in_order(store: CheckpointStore,
                                                        tmp_path: Path) -> None:
    name = commit(store, 5).name
    points: list[str] = []

    CheckpointStore(tmp_path / "root", storage_with(), on_point=points.append).upload_from(
        store, name)

    assert points == list(SAVE_POINTS)


@pytest.mark.parametrize("point", SAVE_POINTS)
def test_an_upload_killed_at_each_save_point_commits_all_or_nothing(
    store: CheckpointStore, tmp_path: Path, point: str
) -> None:
    name = commit(store, 10).name

    def die(at: str) -> None:
        if at == point:
            raise Killed(at)

    with pytest.raises(Killed):
        CheckpointStore(tmp_path / "root", storage_with(), on_point=die).upload_from(store, name)

    reader = CheckpointStore(tmp_path / "root", storage_with())
    if point == SAVE_POINTS[-1]:
        assert reader.list_names() == [name]
        assert_exactly_equal(reader.load_verified(name)[1], payload_for(10))
    else:
        assert reader.list_names() == [] and committed_folders(reader) == []


# -- verification ------------------------------------------------------------------


def _truncate_half(folder: Path) -> None:
    path = folder / PAYLOAD_NAME
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _truncate_zero(folder: Path) -> None:
    (folder / PAYLOAD_NAME).write_bytes(b"")


def _flip_byte(folder: Path) -> None:
    path = folder / PAYLOAD_NAME
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _payload_missing(folder: Path) -> None:
    (folder / PAYLOAD_NAME).unlink()


def _manifest_missing(folder: Path) -> None:
    (folder / MANIFEST_NAME).unlink()


def _manifest_torn(folder: Path) -> None:
    path = folder / MANIFEST_NAME
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _manifest_zero(folder: Path) -> None:
    (folder / MANIFEST_NAME).write_bytes(b"")


def _manifest_other_schema(folder: Path) -> None:
    path = folder / MANIFEST_NAME
    raw = json.loads(path.read_bytes())
    raw["surprise"] = True
    path.write_text(json.dumps(raw))


def _folder_missing(folder: Path) -> None:
    shutil.rmtree(folder)


CORRUPTIONS = {
    "payload_truncated_half": _truncate_half,
    "payload_truncated_zero": _truncate_zero,
    "payload_byte_flipped": _flip_byte,
    "payload_missing": _payload_missing,
    "manifest_missing": _manifest_missing,
    "manifest_torn": _manifest_torn,
    "manifest_zero_bytes": _manifest_zero,
    "manifest_unknown_field": _manifest_other_schema,
    "folder_missing": _folder_missing,
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
@pytest.mark.parametrize("reader", ["verify", "load_verified"])
def test_verify_rejects_a_damaged_checkpoint(store: CheckpointStore, kind: str,
                                             reader: str) -> None:
    name = commit(store, 20).name
    size = (store.dir / name / PAYLOAD_NAME).stat().st_size
    CORRUPTIONS[kind](store.dir / name)
    if kind == "payload_byte_flipped":
        assert (store.dir / name / PAYLOAD_NAME).stat().st_size == size  # only the hash tells

    with pytest.raises(CheckpointError, match=name) as caught:
        getattr(store, reader)(name)
    expected = {"payload_truncated_half": f"is {size // 2} bytes, the manifest says {size}",
                "payload_truncated_zero": f"is 0 bytes, the manifest says {size}",
                "payload_byte_flipped": "fails its sha256 check",
                "payload_missing": "state.pt is missing",
                "manifest_missing": "no manifest", "folder_missing": "no manifest",
                "manifest_zero_bytes": "torn or invalid", "manifest_torn": "torn or invalid",
                "manifest_unknown_field": "torn or invalid"}[kind]
    assert expected in str(caught.value)


@pytest.mark.parametrize("piece", [0, 1, 2, -1])
def test_a_changed_byte_in_any_piece_fails_verification(
    store: CheckpointStore, small_pieces: int, piece: int
) -> None:
    manifest = commit(store, 20)
    assert manifest.files[0].piece_bytes == 512
    path = store.dir / manifest.name / PAYLOAD_NAME
    data = bytearray(path.read_bytes())
    assert len(data) > 3 * 512
    store.verify(manifest.name)
    at = piece * 512 + 7 if piece >= 0 else len(data) - 1
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="fails its sha256 check"):
        store.verify(manifest.name)


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> int:
    """Payloads hashed in 512-byte pieces: a few KB make many."""
    monkeypatch.setattr("colabrun.state.checkpoints.HASH_PIECE_BYTES", 512)
    return 512


def test_load_verified_overlaps_nothing_away(store: CheckpointStore, small_pieces: int) -> None:
    manifest = commit(store, 20)
    assert len(manifest.files[0].pieces or ()) > 3
    loaded_manifest, payload = store.load_verified(manifest.name)
    assert loaded_manifest == manifest
    assert_exactly_equal(payload, payload_for(20))


@pytest.mark.parametrize("piece", [0, 1, 2, -1])
def test_load_verified_refuses_a_changed_byte_in_any_piece(
    store: CheckpointStore, small_pieces: int, piece: int
) -> None:
    name = commit(store, 20).name
    path = store.dir / name / PAYLOAD_NAME
    data = bytearray(path.read_bytes())
    count = -(-len(data) // small_pieces)
    at = piece * small_pieces + 7 if piece >= 0 else len(data) - 1
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    number = (piece if piece >= 0 else count - 1) + 1
    with pytest.raises(CheckpointError,
                       match=f"fails its sha256 check \\(piece {number} of {count}\\)"):
        store.load_verified(name)


def test_the_reader_never_hands_out_a_byte_of_a_piece_that_did_not_match(
    tmp_path: Path
) -> None:
    path = tmp_path / "f.bin"
    good = bytes(range(256)) * 20  # 5120 bytes: 10 pieces of 512
    pieces = [hashlib.sha256(good[i:i + 512]).hexdigest() for i in range(0, len(good), 512)]
    bad = bytearray(good)
    bad[3 * 512 + 100] ^= 1
    path.write_bytes(bytes(bad))
    got = bytearray()

    def consume(file: Any) -> None:
        while chunk := file.read(300):  # reads that straddle the pieces
            got.extend(chunk)

    with pytest.raises(PieceMismatch, match="piece 4 of 10"):
        storage_with().read_verified(path, consume, size=len(good), piece_bytes=512,
                                     pieces=pieces)
    assert bytes(got) == good[:len(got)] and len(got) <= 3 * 512


def test_pieces_the_loader_never_read_are_verified_too(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    good = bytes(2048)
    pieces = [hashlib.sha256(good[i:i + 512]).hexdigest() for i in range(0, 2048, 512)]
    path.write_bytes(good[:-1] + b"\1")

    with pytest.raises(PieceMismatch, match="piece 4 of 4"):
        storage_with().read_verified(path, lambda f: f.read(10), size=2048, piece_bytes=512,
                                     pieces=pieces)


def test_a_transient_read_error_while_hashing_is_retried(
    job_dir: Path, small_pieces: int
) -> None:
    fs = FailingFs("open", err=errno.EIO, nth=4, match=PAYLOAD_NAME)
    store = CheckpointStore(job_dir, storage_with(fs))
    name = commit(store, 20).name
    _, payload = store.load_verified(name)
    assert_exactly_equal(payload, payload_for(20))
    assert fs.counts["open"] > 4  # the failing open was met, and the load retried


def test_a_one_piece_payload_is_opened_once_and_a_transient_error_retried(
    job_dir: Path
) -> None:
    fs = FailingFs("open", err=errno.EIO, nth=1_000, match=PAYLOAD_NAME)
    store = CheckpointStore(job_dir, storage_with(fs))
    manifest = commit(store, 20)
    assert len(manifest.files[0].pieces or ()) == 1
    before = fs.counts["open"]
    fs.nth = before + 1  # the load's first open fails
    _, payload = store.load_verified(manifest.name)
    assert_exactly_equal(payload, payload_for(20))
    assert fs.counts["open"] - before == 2  # the failed open, then one read for all


def test_a_one_piece_payload_with_a_changed_byte_is_refused(store: CheckpointStore) -> None:
    name = commit(store, 20).name
    path = store.dir / name / PAYLOAD_NAME
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"fails its sha256 check \(piece 1 of 1\)"):
        store.load_verified(name)


def test_a_manifest_whose_pieces_do_not_add_up_is_invalid(store: CheckpointStore) -> None:
    name = commit(store, 20).name
    path = store.dir / name / MANIFEST_NAME
    raw = json.loads(path.read_text())
    raw["files"][0]["pieces"] = ["0" * 64]
    path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="manifest is torn or invalid"):
        store.load_verified(name)


def _as_version_1(folder: Path) -> None:
    """Rewrite a checkpoint's manifest as colabrun wrote it before pieces: the
    sha256 of the whole payload, schema_version 1."""
    raw = json.loads((folder / MANIFEST_NAME).read_text())
    raw["schema_version"] = 1
    payload = (folder / PAYLOAD_NAME).read_bytes()
    raw["files"] = [{"path": PAYLOAD_NAME, "size_bytes": len(payload),
                     "sha256": hashlib.sha256(payload).hexdigest()}]
    (folder / MANIFEST_NAME).write_text(json.dumps(raw))


def test_a_version_1_checkpoint_verifies_loads_and_uploads(
    store: CheckpointStore, tmp_path: Path
) -> None:
    name = commit(store, 20).name
    _as_version_1(store.dir / name)

    assert store.verify(name).files[0].piece_bytes is None
    assert_exactly_equal(store.load_payload(name), payload_for(20))
    assert_exactly_equal(store.load_verified(name)[1], payload_for(20))
    root = CheckpointStore(tmp_path / "root", storage_with())
    copied = root.upload_from(store, name)
    assert root.verify(copied.name).files == store.verify(name).files


@pytest.mark.parametrize("pieces", ["one", "many"])
def test_an_upload_verifies_its_source_and_commits_nothing_from_a_damaged_one(
    store: CheckpointStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pieces: str
) -> None:
    if pieces == "many":
        monkeypatch.setattr("colabrun.state.checkpoints.HASH_PIECE_BYTES", 512)
    name = commit(store, 20).name
    root = CheckpointStore(tmp_path / "root", storage_with())
    assert root.verify(root.upload_from(store, name).name).files == store.verify(name).files

    path = store.dir / name / PAYLOAD_NAME
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    committed = root.list_names()
    with pytest.raises(CheckpointError, match=f"checkpoint {name}: state.pt fails its sha256"):
        root.upload_from(store, name)
    assert root.list_names() == committed


def test_an_upload_of_a_checkpoint_written_moments_ago_does_not_hash_it_again(
    store: CheckpointStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = commit(store, 20).name
    checked: list[str] = []
    verify_file = CheckpointStore._verify_file

    def counting(self: CheckpointStore, *args: Any, **kwargs: Any) -> Any:
        checked.append(self.dir.name)
        return verify_file(self, *args, **kwargs)

    monkeypatch.setattr(CheckpointStore, "_verify_file", counting)
    root = CheckpointStore(tmp_path / "root", storage_with())
    copied = root.upload_from(store, name, verify_source=False)
    assert checked == []
    assert root.verify(copied.name).files == store.verify(name).files
    checked.clear()
    root.upload_from(store, name)  # by default, the source is checked as it is copied
    assert checked == [store.dir.name]


def test_an_upload_reads_its_source_through_the_local_filesystem(
    store: CheckpointStore, tmp_path: Path
) -> None:
    """Faults injected into the root's filesystem never reach the local disk."""
    name = commit(store, 20).name
    root_fs = FailingFs("open", times=1_000, match=str(store.dir))  # any local path
    root = CheckpointStore(tmp_path / "root", storage_with(root_fs))
    copied = root.upload_from(store, name)
    assert root.verify(copied.name).files == store.verify(name).files


def test_a_manifest_from_a_newer_colabrun_asks_for_an_upgrade(store: CheckpointStore) -> None:
    name = commit(store, 20).name
    path = store.dir / name / MANIFEST_NAME
    raw = json.loads(path.read_text())
    raw["schema_version"] = MANIFEST_SCHEMA_VERSION + 1
    raw["files"][0]["signature"] = "a field this colabrun does not know"
    path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"schema_version 3.*upgrade colabrun"):
        store.verify(name)


def test_verify_of_a_damaged_newest_leaves_the_older_one_good(store: CheckpointStore) -> None:
    older = commit(store, 10).name
    newest = commit(store, 20).name
    _truncate_zero(store.dir / newest)

    valid = []
    for name in plan_resume([], store.list_names()).candidates:
        try:
            store.verify(name)
        except CheckpointError:
            continue
        valid.append(name)

    assert valid == [older]


def test_load_of_a_truncated_payload_is_a_checkpoint_error(store: CheckpointStore) -> None:
    name = commit(store, 3).name
    _truncate_half(store.dir / name)

    with pytest.raises(CheckpointError, match="cannot load"):
        store.load_payload(name)


# -- safe loading ------------------------------------------------------------------

EXECUTED: list[str] = []


def _gadget(what: str) -> str:
    EXECUTED.append(what)
    return what


class Gadget:
    """Unpickling this runs ``_gadget``: what a malicious checkpoint would do."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_gadget, ("pwned",))


def test_payload_with_arbitrary_object_is_refused_not_executed(store: CheckpointStore) -> None:
    EXECUTED.clear()
    name = checkpoint_name(30, 1)
    folder = store.dir / name
    folder.mkdir(parents=True)
    torch.save({"tracked": {"w": torch.zeros(2)}, "evil": Gadget()}, folder / PAYLOAD_NAME)
    data = (folder / PAYLOAD_NAME).read_bytes()
    manifest = Manifest(
        name=name, step=30, epoch=0, batch=0, generation=1, created_at=1.0, meta={},
        files=(ManifestFile(path=PAYLOAD_NAME, size_bytes=len(data),
                            sha256=hashlib.sha256(data).hexdigest()),),
    )
    (folder / MANIFEST_NAME).write_text(manifest.model_dump_json())
    store.verify(name)  # it is intact: only loading must refuse it

    with pytest.raises(CheckpointError, match=name):
        store.load_payload(name)

    assert EXECUTED == []


# -- deleting ----------------------------------------------------------------------


def test_discard_removes_manifest_first_then_truncates_everything(job_dir: Path) -> None:
    keep = commit(CheckpointStore(job_dir, storage_with()), 5).name
    doomed = commit(CheckpointStore(job_dir, storage_with()), 10).name
    fs = FailingFs()
    store = CheckpointStore(job_dir, storage_with(fs),
                            on_point=lambda p: fs.calls.append((p, Path())))
    folder = store.dir / doomed

    store.discard(doomed)

    steps = [(m, p) for m, p in fs.calls
             if m in ("truncate", "unlink", "rmdir") or m in ROTATE_POINTS]
    assert steps == [
        ("truncate", folder / MANIFEST_NAME),
        ("unlink", folder / MANIFEST_NAME),
        ("rotate.manifest_removed", Path()),
        ("truncate", folder / PAYLOAD_NAME),
        ("unlink", folder / PAYLOAD_NAME),
        ("rmdir", folder),
    ]
    assert not folder.exists()
    assert store.list_names() == [keep]
    store.verify(keep)


def test_discard_uncommitted_removes_only_temporaries(store: CheckpointStore) -> None:
    good = commit(store, 5).name
    tmp = store.dir / ".tmp-step-000000010-g0001-1a2b3c"
    tmp.mkdir()
    (tmp / PAYLOAD_NAME).write_bytes(b"half a payload")
    (store.dir / "notes").mkdir()
    (store.dir / "README.txt").write_text("mine")

    removed = store.discard_uncommitted()

    assert removed == [tmp.name]
    assert sorted(p.name for p in store.dir.iterdir()) == ["README.txt", "notes", good]
    store.verify(good)


def test_list_names_ignores_temporaries_and_junk(store: CheckpointStore) -> None:
    good = commit(store, 5).name
    (store.dir / ".tmp-step-000000010-g0001-1a2b3c").mkdir()
    (store.dir / f"{good} (1)").mkdir()  # a Drive duplicate

    assert store.list_names() == [good]


def test_empty_store_lists_nothing(store: CheckpointStore) -> None:
    assert store.list_names() == []
    assert store.discard_uncommitted() == []
