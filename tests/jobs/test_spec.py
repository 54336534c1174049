"""Tier 1: the job spec: validation, defaults, fingerprint, loading, schema, error lines.

Everything here is pure or touches only a ``tmp_path``; no training runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from colabrun.jobs.errors import SpecError
from colabrun.jobs.loading import load_spec, validate_spec
from colabrun.jobs.spec import DEFINING_FIELDS, CheckpointPolicy, JobSpec, changed_defining_fields
from colabrun.runner.commands.cli import main
from tests.helpers import REPO

ENTRYPOINT = "colabrun.jobs.examples.digits:train"

#: One spec, written below in each file format; every loader must yield exactly this.
FIELDS: dict[str, Any] = {
    "name": "digits-small",
    "entrypoint": ENTRYPOINT,
    "epochs": 2,
    "seed": 7,
    "device": "cpu",
    "params": {"lr": 0.05, "batch_size": 32, "layers": [8, 16], "tag": "small"},
    "checkpoint": {"every_steps": 10, "every_s": None, "keep_last": 2},
}

YAML_TEXT = """\
name: digits-small
entrypoint: colabrun.jobs.examples.digits:train
epochs: 2
seed: 7
device: cpu
params:
  lr: 0.05
  batch_size: 32
  layers: [8, 16]
  tag: small
checkpoint:
  every_steps: 10
  every_s: null
  keep_last: 2
"""

# TOML has no null: leaving every_s out would give its default (300), so the
# TOML file differs only there, and the test compares it after that override.
TOML_TEXT = """\
name = "digits-small"
entrypoint = "colabrun.jobs.examples.digits:train"
epochs = 2
seed = 7
device = "cpu"

[params]
lr = 0.05
batch_size = 32
layers = [8, 16]
tag = "small"

[checkpoint]
every_steps = 10
keep_last = 2
"""

PY_SPEC_TEXT = f"""\
from colabrun.jobs.spec import JobSpec

spec = JobSpec.model_validate({FIELDS!r})
"""

PY_DICT_TEXT = f"""\
spec = {FIELDS!r}
"""


def make(**changes: Any) -> JobSpec:
    """The reference spec with some fields replaced (validated)."""
    return JobSpec.model_validate({**FIELDS, **changes})


def train_fn(run: Any) -> None:
    """A training function passed as an object (the notebook way)."""


# -- validation -------------------------------------------------------------------


def test_minimal_spec_gets_documented_defaults() -> None:
    spec = JobSpec(name="job", entrypoint=ENTRYPOINT, epochs=1)
    assert spec.params == {}
    assert spec.seed == 0
    assert spec.device == "auto"
    assert spec.cpu_fallback is None
    assert spec.deterministic is True
    assert spec.root is None
    assert spec.budget_s is None
    assert spec.description == ""
    assert spec.checkpoint == CheckpointPolicy()


def test_checkpoint_policy_defaults() -> None:
    policy = CheckpointPolicy()
    assert policy.every_steps is None
    assert policy.every_s == 300.0  # "a few minutes"
    assert policy.at_epoch_end == "auto"  # every epoch, within the adaptive budget
    assert policy.keep_last == 3


@pytest.mark.parametrize("field, value", [("every_steps", 0), ("every_steps", -5),
                                          ("every_s", 0), ("every_s", -1.0),
                                          ("keep_last", 0), ("keep_last", -1)])
def test_checkpoint_policy_rejects_non_positive(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as info:
        CheckpointPolicy.model_validate({field: value})
    assert info.value.errors()[0]["loc"] == (field,)


def test_checkpoint_triggers_can_be_switched_off() -> None:
    policy = CheckpointPolicy(every_steps=None, every_s=None, at_epoch_end=False, keep_last=1)
    assert (policy.every_steps, policy.every_s, policy.at_epoch_end) == (None, None, False)


def test_spec_is_frozen() -> None:
    spec = make()
    with pytest.raises(ValidationError, match="frozen"):
        spec.epochs = 5
    with pytest.raises(ValidationError, match="frozen"):
        spec.checkpoint.keep_last = 9
    assert spec.epochs == 2 and spec.checkpoint.keep_last == 2


def test_unknown_top_level_field_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({**FIELDS, "epoch": 3})
    (error,) = info.value.errors()
    assert (error["type"], error["loc"]) == ("extra_forbidden", ("epoch",))


def test_unknown_checkpoint_field_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({**FIELDS, "checkpoint": {"keep": 2}})
    (error,) = info.value.errors()
    assert (error["type"], error["loc"]) == ("extra_forbidden", ("checkpoint", "keep"))


@pytest.mark.parametrize("name", ["a", "digits-cnn", "Job_2", "0start", "x" * 64])
def test_safe_names_are_accepted(name: str) -> None:
    assert make(name=name).name == name


@pytest.mark.parametrize("name", [
    "", "a/b", "/abs", "..", "a..b", "../escape", "my job", " lead", "trail ", "tab\tname",
    "-dash-first", "_underscore-first", ".hidden", "x" * 65, "a\\b", "é", "name\n", "a\nb",
])
def test_unsafe_names_are_rejected(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        make(name=name)
    (error,) = info.value.errors()
    assert error["loc"] == ("name",)
    assert "not a safe job name" in error["msg"]


@pytest.mark.parametrize("entrypoint", [
    "pkg:fn", "pkg.module:function", "pkg.module:Class.method", "_private:_fn", ENTRYPOINT,
])
def test_entrypoint_strings_of_the_right_form_are_accepted(entrypoint: str) -> None:
    assert make(entrypoint=entrypoint).entrypoint == entrypoint


@pytest.mark.parametrize("entrypoint", [
    "", "pkg.module.function", "pkg.module:", ":function", "pkg module:fn", "1pkg:fn",
    "pkg:1fn", "a:b:c", "pkg/module:fn", "pkg.module:fn()", "pkg:fn\n",
])
def test_entrypoint_strings_of_the_wrong_form_are_rejected(entrypoint: str) -> None:
    with pytest.raises(ValidationError) as info:
        make(entrypoint=entrypoint)
    assert all(err["loc"][0] == "entrypoint" for err in info.value.errors())
    assert "package.module:function" in str(info.value)


def test_callable_entrypoint_is_allowed_and_named_by_module_and_qualname() -> None:
    spec = make(entrypoint=train_fn)
    assert spec.entrypoint is train_fn
    assert spec.entrypoint_ref == f"{__name__}:train_fn"
    assert spec.to_json_dict()["entrypoint"] == f"{__name__}:train_fn"
    json.dumps(spec.to_json_dict())  # storable as is


def test_non_callable_non_string_entrypoint_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        make(entrypoint=42)
    assert all(err["loc"][0] == "entrypoint" for err in info.value.errors())


@pytest.mark.parametrize("epochs", [1, 2, 1000])
def test_positive_epochs_are_accepted(epochs: int) -> None:
    assert make(epochs=epochs).epochs == epochs


@pytest.mark.parametrize("epochs", [0, -1, -100, 2.5, "ten", None, True, 2.0, "3"])
def test_zero_negative_or_non_integer_epochs_are_rejected(epochs: Any) -> None:
    with pytest.raises(ValidationError) as info:
        make(epochs=epochs)
    (error,) = info.value.errors()
    assert error["loc"] == ("epochs",)


def test_yaml_yes_is_not_one_epoch(tmp_path: Path) -> None:
    # YAML 1.1 reads `yes` as true, and a lax int would take true as 1
    path = tmp_path / "job.yaml"
    path.write_text(YAML_TEXT.replace("epochs: 2", "epochs: yes"))
    with pytest.raises(SpecError, match=r"epochs: .*\(got True\); use a whole number"):
        load_spec(path)


@pytest.mark.parametrize("field", ["seed", "checkpoint.every_steps", "checkpoint.keep_last"])
def test_other_whole_number_fields_refuse_booleans_and_floats(field: str) -> None:
    for value in (True, 3.0):
        data: dict[str, Any] = {**FIELDS, "checkpoint": dict(FIELDS["checkpoint"])}
        if field.startswith("checkpoint."):
            data["checkpoint"][field.split(".")[1]] = value
        else:
            data[field] = value
        with pytest.raises(SpecError, match=f"spec: {field}: "):
            validate_spec(data)


def test_required_fields_are_name_entrypoint_epochs() -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({})
    missing = {err["loc"][0] for err in info.value.errors() if err["type"] == "missing"}
    assert missing == {"name", "entrypoint", "epochs"}


# ids spelled out: conftest skips any test whose keywords include "gpu", and a bare
# parameter id "gpu" would be one
@pytest.mark.parametrize("device", ["gpu", "CUDA", "tpu", ""],
                         ids=lambda device: f"device={device!r}")
def test_unknown_device_is_rejected(device: str) -> None:
    with pytest.raises(ValidationError):
        make(device=device)


def test_params_must_be_json_values() -> None:
    with pytest.raises(ValidationError) as info:
        make(params={"fn": object()})
    assert info.value.errors()[0]["loc"][0] == "params"


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        make(budget_s=0)
    assert make(budget_s=3600).budget_s == 3600


@pytest.mark.parametrize("device, cpu_fallback, expected", [
    ("auto", None, True),
    ("cuda", None, False),
    ("cpu", None, False),      # already the CPU: there is nothing to fall back from
    ("cuda", True, True),
    ("auto", False, False),
])
def test_allows_cpu_fallback(device: str, cpu_fallback: bool | None, expected: bool) -> None:
    assert make(device=device, cpu_fallback=cpu_fallback).allows_cpu_fallback is expected


# -- fingerprint ------------------------------------------------------------------


def test_fingerprint_is_stable_and_independent_of_key_order() -> None:
    first = make()
    reordered = JobSpec.model_validate(dict(reversed(list(FIELDS.items()))) | {
        "params": dict(reversed(list(FIELDS["params"].items())))})
    assert first.fingerprint() == make().fingerprint() == reordered.fingerprint()
    # the fingerprint is a documented function of the defining fields, so it is the
    # same in every process and every version that keeps this definition
    canonical = json.dumps({"entrypoint": ENTRYPOINT, "params": FIELDS["params"], "seed": 7},
                           sort_keys=True, separators=(",", ":"))
    assert first.fingerprint() == hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize("changes", [
    {"params": {**FIELDS["params"], "lr": 0.1}},
    {"params": {**FIELDS["params"], "extra": 1}},
    {"params": {}},
    {"seed": 8},
    {"entrypoint": "colabrun.jobs.examples.digits:other"},
    {"entrypoint": train_fn},
])
def test_fingerprint_changes_with_what_defines_the_model(changes: dict[str, Any]) -> None:
    assert make(**changes).fingerprint() != make().fingerprint()


@pytest.mark.parametrize("changes", [
    {"epochs": 50},
    {"checkpoint": {"every_steps": 1, "keep_last": 9, "at_epoch_end": False}},
    {"root": "/somewhere/else"},
    {"name": "another-name"},
    {"device": "auto"},
    {"budget_s": 60.0},
    {"description": "longer run"},
    {"deterministic": False},
])
def test_fingerprint_ignores_what_does_not_define_the_model(changes: dict[str, Any]) -> None:
    assert make(**changes).fingerprint() == make().fingerprint()


def test_defining_fields_are_entrypoint_params_seed() -> None:
    assert set(DEFINING_FIELDS) == {"entrypoint", "params", "seed"}
    assert make().defining_fields() == {
        "entrypoint": ENTRYPOINT, "params": FIELDS["params"], "seed": 7}


def test_changed_defining_fields_is_empty_for_the_same_job() -> None:
    old = make().defining_fields()
    assert changed_defining_fields(old, make()) == []
    assert changed_defining_fields(old, make(epochs=10, root="/x", checkpoint={})) == []


def test_changed_defining_fields_names_each_difference_sorted() -> None:
    old = make().defining_fields()
    assert changed_defining_fields(old, make(seed=1)) == ["seed"]
    assert changed_defining_fields(old, make(params={"lr": 1})) == ["params"]
    new = make(seed=1, params={}, entrypoint="pkg:fn")
    assert changed_defining_fields(old, new) == ["entrypoint", "params", "seed"]


def test_changed_defining_fields_matches_a_callable_to_its_recorded_name() -> None:
    spec = make(entrypoint=train_fn)
    recorded = json.loads(json.dumps(spec.defining_fields()))  # as stored in state.json
    assert changed_defining_fields(recorded, spec) == []


def test_changed_defining_fields_treats_missing_old_values_as_changed() -> None:
    assert changed_defining_fields({}, make()) == ["entrypoint", "params", "seed"]


# -- loading ----------------------------------------------------------------------


def _write_all_formats(folder: Path) -> dict[str, Path]:
    files = {
        "yaml": folder / "job.yaml",
        "yml": folder / "job.yml",
        "toml": folder / "job.toml",
        "json": folder / "job.json",
        "py-spec": folder / "job_spec.py",
        "py-dict": folder / "job_dict.py",
    }
    files["yaml"].write_text(YAML_TEXT)
    files["yml"].write_text(YAML_TEXT)
    files["toml"].write_text(TOML_TEXT)
    files["json"].write_text(json.dumps(FIELDS, indent=2))
    files["py-spec"].write_text(PY_SPEC_TEXT)
    files["py-dict"].write_text(PY_DICT_TEXT)
    return files


def test_load_spec_gives_the_same_spec_from_every_format(tmp_path: Path) -> None:
    expected = make()
    loaded = {kind: load_spec(path) for kind, path in _write_all_formats(tmp_path).items()}
    # TOML cannot say null, so its every_s is the default; everything else is identical
    toml = loaded.pop("toml")
    assert toml.checkpoint.every_s == CheckpointPolicy().every_s
    assert toml.model_copy(update={"checkpoint": expected.checkpoint}) == expected
    for kind, spec in loaded.items():
        assert spec == expected, kind
        assert spec.fingerprint() == expected.fingerprint(), kind


def test_load_spec_accepts_str_paths(tmp_path: Path) -> None:
    path = _write_all_formats(tmp_path)["yaml"]
    assert load_spec(str(path)) == make()


def test_load_spec_applies_overrides(tmp_path: Path) -> None:
    for kind, path in _write_all_formats(tmp_path).items():
        spec = load_spec(path, overrides={"root": "/elsewhere", "epochs": 9})
        assert (spec.root, spec.epochs) == ("/elsewhere", 9), kind


def test_load_spec_validates_overrides_in_every_format(tmp_path: Path) -> None:
    for kind, path in _write_all_formats(tmp_path).items():
        with pytest.raises(SpecError, match="epochs"):
            load_spec(path, overrides={"epochs": 0})
        with pytest.raises(SpecError, match="bogus"):
            load_spec(path, overrides={"bogus": 1})
        assert kind


def test_load_spec_reads_the_builtin_example() -> None:
    spec = load_spec(REPO / "jobs" / "examples" / "digits.yaml")
    assert spec.name == "digits-cnn"
    assert spec.entrypoint == ENTRYPOINT


def test_python_spec_file_without_spec_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nothing.py"
    path.write_text("job = 1\n")
    with pytest.raises(SpecError, match="define a module-level `spec`") as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_python_spec_file_that_raises_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(SpecError, match="boom") as info:
        load_spec(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_spec_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- name\n- epochs\n")
    with pytest.raises(SpecError, match="must be a mapping") as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_unknown_suffix_names_the_accepted_ones(tmp_path: Path) -> None:
    path = tmp_path / "job.txt"
    path.write_text(YAML_TEXT)
    with pytest.raises(SpecError, match=r"\.yaml.*\.toml.*\.json.*\.py"):
        load_spec(path)


def test_empty_yaml_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(path)


# -- validate_spec: every error, one line each ------------------------------------


def test_validate_spec_reports_every_error_one_line_each_with_its_path() -> None:
    data = {
        "name": "bad/name",
        "entrypoint": "no-colon",
        "epochs": 0,
        "device": "gpu",
        "checkpoint": {"keep_last": 0, "every_s": -1, "typo": True},
        "sede": 1,
    }
    with pytest.raises(SpecError) as info:
        validate_spec(data, source="job.yaml")
    lines = str(info.value).splitlines()
    expected_paths = ["name", "entrypoint", "epochs", "device", "checkpoint.every_s",
                      "checkpoint.keep_last", "checkpoint.typo", "sede"]
    assert len(lines) == len(expected_paths), lines
    for path in expected_paths:
        (line,) = [line for line in lines if line.startswith(f"job.yaml: {path}: ")]
        assert "; " in line or "(got" in line, line  # says what was seen and how to fix
    by_path = {line.split(": ")[1]: line for line in lines}
    assert "(got 0)" in by_path["checkpoint.keep_last"]
    assert "use a larger value" in by_path["checkpoint.keep_last"]
    assert "remove it or fix its spelling" in by_path["sede"]
    assert "colabrun schema" in by_path["sede"]
    assert "'gpu'" in by_path["device"]


def test_validate_spec_names_each_missing_field() -> None:
    with pytest.raises(SpecError) as info:
        validate_spec({}, source="empty.json")
    lines = str(info.value).splitlines()
    assert sorted(lines) == [f"empty.json: {field}: Field required; add it"
                             for field in ("entrypoint", "epochs", "name")]


def test_validate_spec_chains_the_pydantic_error() -> None:
    with pytest.raises(SpecError) as info:
        validate_spec({"name": "x"})
    assert isinstance(info.value.__cause__, ValidationError)
    assert isinstance(info.value, ValueError)  # SpecError subclasses ValueError


def test_validate_spec_returns_the_spec() -> None:
    assert validate_spec(FIELDS) == make()


# -- schema -----------------------------------------------------------------------


def _schema_from_cli(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["schema"]) == 0
    out = capsys.readouterr().out
    schema = json.loads(out)
    assert isinstance(schema, dict)
    return schema


def test_schema_command_prints_the_fields(capsys: pytest.CaptureFixture[str]) -> None:
    schema = _schema_from_cli(capsys)
    assert schema["type"] == "object"
    assert set(schema["properties"]) == set(JobSpec.model_fields)
    assert set(schema["required"]) == {"name", "entrypoint", "epochs"}
    assert schema["additionalProperties"] is False
    assert schema["properties"]["entrypoint"]["type"] == "string"  # the callable is skipped
    assert schema["properties"]["epochs"]["exclusiveMinimum"] == 0
    assert set(schema["properties"]["device"]["enum"]) == {"auto", "cuda", "cpu"}
    policy = schema["$defs"]["CheckpointPolicy"]
    assert set(policy["properties"]) == {"every_steps", "every_s", "at_epoch_end", "max_overhead",
                                         "snapshot", "keep_last", "keep_best"}
    assert policy["additionalProperties"] is False
    for field, prop in schema["properties"].items():
        assert prop.get("description") or prop.get("$ref") or prop.get("allOf"), field


def test_schema_command_output_is_a_valid_json_schema(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = _schema_from_cli(capsys)
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    validator.validate(FIELDS)
    validator.validate(make().to_json_dict())
    for bad in ({**FIELDS, "epochs": 0}, {**FIELDS, "bogus": 1},
                {**FIELDS, "checkpoint": {"keep_last": 0}}, {"name": "x"}):
        assert not validator.is_valid(bad), bad
