"""A job's folder under the root, and the edges over it.

``<root>/<name>/`` holds ``spec.json`` (the spec as declared, so a fresh
runtime can resume from the root alone), ``state.json``, ``checkpoints/``,
``metrics.jsonl`` and ``log/``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from colabrun.jobs.errors import CheckpointError, JobNotFound, SpecError
from colabrun.jobs.loading import validate_spec
from colabrun.jobs.spec import NAME_PATTERN, JobSpec
from colabrun.state.checkpoints import CheckpointStore
from colabrun.state.hooks import no_hook
from colabrun.state.manifest import Manifest
from colabrun.state.model import JobState, Status
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage
from colabrun.state.transitions import new_job, record_checkpoint

SPEC_NAME = "spec.json"


class JobDir:
    """One job's folder.

    Args:
        root: the folder holding all jobs.
        name: the job's name (its folder).
        storage: the storage edge.
        on_point: fault-injection hook passed to the state file and the store.
    """

    def __init__(
        self,
        root: Path,
        name: str,
        *,
        storage: Storage | None = None,
        on_point: Callable[[str], None] = no_hook,
        local_root: Path | None = None,
    ) -> None:
        if not NAME_PATTERN.fullmatch(name):
            raise JobNotFound(f"{name!r} is not a job name (letters, digits, '-' and '_'); "
                              f"`colabrun list --root {root}` shows the jobs there")
        self.root = root
        self.name = name
        self.path = root / name
        self.storage = storage or Storage()
        self.statefile = StateFile(self.path, self.storage, on_point=on_point)
        self.store = CheckpointStore(self.path, self.storage, on_point=on_point)
        # Staging on this runtime's disk, keyed by root and name: two roots holding
        # a job of the same name never share it. A plain Storage: faults injected
        # into the root's storage do not reach the local disk. No timeout per call:
        # the writer runs a whole save in its own thread (or process), and the
        # training thread bounds its wait for it (Saver.ready).
        key = hashlib.sha256(str(root).encode()).hexdigest()[:8]
        local = (local_root or Path(tempfile.gettempdir()) / "colabrun-local") / f"{name}-{key}"
        self.local = CheckpointStore(local, Storage(timeout_s=None, durable=False),
                                     on_point=on_point)

    def claim_local(self, created_at: float) -> None:
        """Make the local staging folder this job's: one left by another job of the same
        name and root (a job folder deleted and created anew) is wiped, so its
        checkpoints and metrics can never leak into this one."""
        folder = self.local.dir.parent
        marker = folder / "job.json"
        mine = json.dumps({"job_created_at": created_at})
        if marker.exists() and marker.read_text() == mine:
            return
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(mine)

    def release_local(self) -> None:
        """Remove the local staging folder (everything in it reached the root)."""
        shutil.rmtree(self.local.dir.parent, ignore_errors=True)

    def exists(self) -> bool:
        """Whether the job has a spec or a state file under the root."""
        return (self.storage.size_of(self.path / SPEC_NAME) is not None
                or self.statefile.exists())

    def write_spec(self, spec: JobSpec) -> None:
        """Keep the spec as declared, atomically."""
        data = (json.dumps(spec.to_json_dict(), indent=2) + "\n").encode()
        tmp = self.path / f".{SPEC_NAME}.tmp"
        self.storage.write_bytes(tmp, data)
        self.storage.replace(tmp, self.path / SPEC_NAME)

    def read_spec(self) -> JobSpec:
        """The spec kept in the folder (for ``colabrun resume NAME``).

        Raises:
            JobNotFound: there is no such job under the root.
            SpecError: the kept spec does not validate.
        """
        path = self.path / SPEC_NAME
        if self.storage.size_of(path) is None:
            raise JobNotFound(
                f"no job {self.name!r} under {self.root} ({path} is missing); check the name "
                f"with `colabrun list --root {self.root}`, or start it with `colabrun run SPEC`"
            )
        try:
            data = json.loads(self.storage.read_bytes(path))
        except json.JSONDecodeError as exc:
            raise SpecError(f"{path}: not valid JSON ({exc}); run the job from its spec file "
                            "with `colabrun run SPEC`, which rewrites it") from exc
        return validate_spec(data, source=str(path))

    def rebuild_state(self, spec: JobSpec, *, now: float) -> tuple[JobState, list[str]]:
        """A state rebuilt from the committed manifests alone.

        Returns:
            The rebuilt state (status ``stopped`` when any checkpoint verifies,
            else ``pending``) and one warning per checkpoint that failed to verify.
        """
        state = new_job(name=spec.name, fingerprint=spec.fingerprint(),
                        defining=spec.defining_fields(), epochs_total=spec.epochs, now=now)
        problems = []
        for name in self.store.list_names():
            try:
                manifest: Manifest = self.store.verify(name)
            except CheckpointError as exc:
                problems.append(str(exc))
                continue
            state = record_checkpoint(state, manifest.record(), now=now)
            state = state.model_copy(update={"generation": max(state.generation,
                                                               manifest.generation)})
        if state.checkpoints:
            state = state.model_copy(
                update={"status": Status.STOPPED, "reason": "state rebuilt from checkpoints"}
            )
        return state, problems
