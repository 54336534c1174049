"""docs/ stays true to the code."""

from __future__ import annotations

import re

from colabrun.jobs.reference import spec_reference_markdown
from tests.helpers import REPO


def test_spec_reference_is_current() -> None:
    committed = (REPO / "docs" / "spec.md").read_text(encoding="utf-8")
    assert committed == spec_reference_markdown(), (
        "docs/spec.md is stale: run `colabrun schema --markdown > docs/spec.md`"
    )


def test_spec_reference_lists_every_field() -> None:
    from colabrun.jobs.spec import CheckpointPolicy, JobSpec, WatchdogPolicy

    page = spec_reference_markdown()
    for name in [*JobSpec.model_fields, *CheckpointPolicy.model_fields,
                 *WatchdogPolicy.model_fields]:
        assert f"| `{name}` |" in page, name


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_between_docs_resolve() -> None:
    """Every relative link in README.md, docs/ and benchmarks/ names a file that exists,
    and an anchor that one of its headings makes."""
    pages = [REPO / "README.md", REPO / "benchmarks" / "README.md",
             *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
                continue
            if anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"),
                                      flags=re.MULTILINE)
                if anchor not in {_anchor(h) for h in headings}:
                    broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)
