"""The spec reference (docs/spec.md), generated from the JobSpec schema.

``colabrun schema --markdown > docs/spec.md`` regenerates it; a test fails
when the committed file is stale.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from colabrun.jobs.spec import (
    CheckpointPolicy,
    DistributedPolicy,
    JobSpec,
    KeepBest,
    WatchdogPolicy,
)

HEADER = """# Spec reference

Generated from the `JobSpec` schema by `colabrun schema --markdown`; do not edit by hand.
A spec is YAML, TOML, JSON, or a Python file defining `spec`. Unknown fields are rejected.
Changing `entrypoint`, `params`, `seed` or `distributed.ranks` of an existing job is refused
unless `--force`; raising `epochs` trains longer, and `distributed.processes` may differ from
one runtime to the next.
"""


def _type_of(field: dict[str, Any]) -> str:
    if "enum" in field:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in field["enum"])
    if "const" in field:  # a one-value Literal in a union
        return f"`{json.dumps(field['const'])}`"
    if "anyOf" in field:
        return " \\| ".join(_type_of(option) for option in field["anyOf"])
    if "$ref" in field:
        return "mapping (below)"
    if len(field.get("allOf", ())) == 1:  # pydantic < 2.9 wraps a described model field
        return _type_of(field["allOf"][0])
    return str(field.get("type", "any"))


def _default_of(model: type[BaseModel], name: str) -> str:
    info = model.model_fields[name]
    if info.is_required():
        return "required"
    default = info.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        return "see below"
    return f"`{json.dumps(default)}`"


def _table(model: type[BaseModel]) -> list[str]:
    schema = model.model_json_schema()
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, field in schema["properties"].items():
        lines.append(f"| `{name}` | {_type_of(field)} | {_default_of(model, name)} "
                     f"| {field.get('description', '')} |")
    return lines


def spec_reference_markdown() -> str:
    """The whole reference page as Markdown."""
    lines = [HEADER, "## Top-level fields", "", *_table(JobSpec), "",
             "## `checkpoint`", "", *_table(CheckpointPolicy), "",
             "### `checkpoint.keep_best`", "", *_table(KeepBest), "",
             "## `watchdog`", "", *_table(WatchdogPolicy), "",
             "## `distributed`", "", *_table(DistributedPolicy), ""]
    return "\n".join(lines)
