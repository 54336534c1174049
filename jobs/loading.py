"""Loading specs from files, and turning pydantic's errors into one line each.

Formats by suffix: ``.yaml``/``.yml``, ``.toml``, ``.json``, and ``.py`` (a
file that defines ``spec``: a :class:`JobSpec` or a dict). Every problem
becomes a :class:`SpecError` whose lines each name the file, the field path
and a fix.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from colabrun.jobs.errors import SpecError
from colabrun.jobs.spec import JobSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

SUFFIXES = (".yaml", ".yml", ".toml", ".json", ".py")

# A hint for each pydantic error type a user is likely to meet.
_HINTS = {
    "extra_forbidden": "remove it or fix its spelling (`colabrun schema` lists the fields)",
    "missing": "add it",
    "greater_than": "use a larger value",
    "greater_than_equal": "use a larger value",
    "int_parsing": "use a whole number",
    "int_type": "use a whole number",
    "float_parsing": "use a number",
    "bool_parsing": "use true or false",
    "literal_error": "use one of the listed values",
    "string_type": "use a quoted string",
    "dict_type": "use a mapping of names to values",
    "model_type": "use a mapping of fields",
}


def load_spec(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> JobSpec:
    """Load and validate a spec file.

    Args:
        path: a ``.yaml``, ``.yml``, ``.toml``, ``.json`` or ``.py`` file.
        overrides: top-level fields that replace the file's (e.g. ``root`` from ``--root``).

    Returns:
        The frozen, validated spec.

    Raises:
        SpecError: the file is missing, unreadable, malformed, or a field is invalid.
    """
    path = Path(path)
    data = read_spec_data(path)
    if isinstance(data, JobSpec):
        if not overrides:
            return data
        data = data.model_dump()  # model_copy(update=...) would skip validation
    data = {**data, **(overrides or {})}
    return validate_spec(data, source=str(path))


def validate_spec(data: Mapping[str, Any], *, source: str = "spec") -> JobSpec:
    """Validate raw spec data, raising one :class:`SpecError` listing every problem.

    Args:
        data: the fields, as parsed from a file or given in Python.
        source: where the data came from, for the messages.

    Raises:
        SpecError: one line per invalid field, each with its path and a hint.
    """
    try:
        return JobSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, source=source)) from exc


def format_validation_error(exc: ValidationError, *, source: str) -> str:
    """One line per pydantic error: ``source: field.path: message (got X); hint``."""
    lines = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        got = "" if err["type"] == "missing" else f" (got {err.get('input')!r})"
        hint = _HINTS.get(err["type"])
        lines.append(f"{source}: {where}: {message}{got}" + (f"; {hint}" if hint else ""))
    return "\n".join(lines)


def read_spec_data(path: Path) -> dict[str, Any] | JobSpec:
    """Parse a spec file into raw data (or a spec, for ``.py`` files).

    Raises:
        SpecError: missing file, unknown suffix, or a syntax error with its line.
    """
    if path.suffix not in SUFFIXES:
        raise SpecError(
            f"{path}: unknown spec format {path.suffix!r}; use one of {', '.join(SUFFIXES)}"
        )
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found; check the path (cwd is {Path.cwd()})")
    if path.suffix == ".py":
        return _read_python(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the spec file: {exc}") from exc
    data = _parse_text(path, text)
    if not isinstance(data, dict):
        raise SpecError(
            f"{path}: the spec must be a mapping of fields (name, entrypoint, epochs, ...), "
            f"got {type(data).__name__}"
        )
    return data


def _parse_text(path: Path, text: str) -> Any:
    try:
        if path.suffix in (".yaml", ".yml"):
            return yaml.safe_load(text)
        if path.suffix == ".toml":
            return tomllib.loads(text)
        return json.loads(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{path}: malformed YAML at {where}{problem}; fix the syntax") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: malformed TOML: {exc}; fix the syntax") from exc
    except json.JSONDecodeError as exc:
        raise SpecError(
            f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; "
            "fix the syntax"
        ) from exc


def _read_python(path: Path) -> dict[str, Any] | JobSpec:
    module_spec = importlib.util.spec_from_file_location(f"_colabrun_spec_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise SpecError(f"{path}: cannot load this Python file as a spec")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise SpecError(f"{path}: running the spec file raised {exc!r}; fix the file") from exc
    spec = getattr(module, "spec", None)
    if isinstance(spec, (JobSpec, dict)):
        return spec
    raise SpecError(f"{path}: define a module-level `spec` (a JobSpec or a dict of its fields)")
