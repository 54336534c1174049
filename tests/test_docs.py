"""docs/ stays true to the code."""

from __future__ import annotations

from jobs.reference import spec_reference_markdown
from tests.helpers import REPO


def test_spec_reference_is_current() -> None:
    committed = (REPO / "docs" / "spec.md").read_text(encoding="utf-8")
    assert committed == spec_reference_markdown(), (
        "docs/spec.md is stale: run `colabrun schema --markdown > docs/spec.md`"
    )


def test_spec_reference_lists_every_field() -> None:
    from jobs.spec import CheckpointPolicy, JobSpec, WatchdogPolicy

    page = spec_reference_markdown()
    for name in [*JobSpec.model_fields, *CheckpointPolicy.model_fields,
                 *WatchdogPolicy.model_fields]:
        assert f"| `{name}` |" in page, name
