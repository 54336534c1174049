"""The code stays small (docs/contributing.md, STYLE.md's "Structure"; issue 14): over the
three layers, the median module is at most 200 lines, no class is longer than 250 lines and
no function or method longer than 60.

A class or function is measured from its ``class``/``def`` line to its last line,
``end_lineno - lineno + 1``: its docstring and comments count, its decorators do not. A nested
function or class is measured on its own too (and counts in the one holding it). A module is
measured as its number of lines. Nothing is exempt.
"""

from __future__ import annotations

import ast
import statistics
from dataclasses import dataclass
from pathlib import Path

import colabrun

#: the layers measured, as the installed package sees them (``colabrun/runner`` is a link)
LAYERS = ("runner", "state", "jobs")
MODULE_MEDIAN_LIMIT = 200
CLASS_LIMIT = 250
FUNCTION_LIMIT = 60


@dataclass(frozen=True)
class Size:
    """One measured class or function: where, its qualified name, its length in lines."""

    path: str
    name: str
    lines: int
    limit: int

    def __str__(self) -> str:
        return f"{self.path}:{self.name} {self.lines} lines (limit {self.limit})"


def layer_files() -> list[Path]:
    """Every Python file of the layers, by its real path (each layer once)."""
    package = Path(colabrun.__file__).resolve().parent
    return sorted(path for layer in LAYERS for path in (package / layer).resolve().rglob("*.py"))


def measure(source: str, path: str) -> list[Size]:
    """Every class and function of one module's ``source``, nested ones included, each with
    its limit; ``path`` names the module in what is returned."""
    sizes: list[Size] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                assert child.end_lineno is not None
                limit = CLASS_LIMIT if isinstance(child, ast.ClassDef) else FUNCTION_LIMIT
                sizes.append(Size(path, name, child.end_lineno - child.lineno + 1, limit))
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=path), "")
    return sizes


def too_long(sizes: list[Size]) -> list[Size]:
    """Those of ``sizes`` over their limit."""
    return [size for size in sizes if size.lines > size.limit]


def offenders_message(offenders: list[Size]) -> str:
    """One line per offender: ``path:Name N lines (limit L)``."""
    return "split these (STYLE.md, Structure):\n" + "\n".join(str(o) for o in offenders)


def test_the_median_module_is_short() -> None:
    files = layer_files()
    lengths = [len(path.read_text(encoding="utf-8").splitlines()) for path in files]
    assert len(files) > 20  # the layers were found, not an empty folder
    median = statistics.median(lengths)
    assert median <= MODULE_MEDIAN_LIMIT, (
        f"the median module of {', '.join(LAYERS)} is {median} lines "
        f"(limit {MODULE_MEDIAN_LIMIT}); split the longest")


def test_no_class_or_function_is_too_long() -> None:
    package = Path(colabrun.__file__).resolve().parent.parent
    sizes = [size for path in layer_files()
             for size in measure(path.read_text(encoding="utf-8"),
                                 str(path.relative_to(package)))]
    assert any(s.name == "Runtime" for s in sizes)  # classes and methods were measured
    offenders = too_long(sizes)
    assert not offenders, offenders_message(offenders)


def function_source(name: str, lines: int, indent: str = "") -> str:
    """A function ``name`` of exactly ``lines`` lines (its ``def`` line included)."""
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(lines - 1))
    return f"{indent}def {name}():\n{body}"


def test_the_check_catches_a_long_function_a_long_class_and_a_nested_one(
        tmp_path: Path) -> None:
    attributes = "".join(f"    a{i} = {i}\n" for i in range(250))
    source = (function_source("at_the_limit", 60)
              + function_source("too_long", 61)
              + "class Big:\n" + attributes + function_source("method", 61, "    ")
              + "def outer():\n" + function_source("inner", 61, "    "))
    module = tmp_path / "long.py"
    module.write_text(source)
    offenders = too_long(measure(module.read_text(), "long.py"))
    assert [str(s) for s in offenders] == [
        "long.py:too_long 61 lines (limit 60)",
        "long.py:Big 312 lines (limit 250)",
        "long.py:Big.method 61 lines (limit 60)",
        "long.py:outer 62 lines (limit 60)",
        "long.py:outer.inner 61 lines (limit 60)",
    ]
    assert "\nlong.py:too_long 61 lines (limit 60)\n" in offenders_message(offenders)


def test_decorators_are_not_measured() -> None:
    source = "@property\n@staticmethod\ndef f():\n    return 1\n"
    assert [s.lines for s in measure(source, "m.py")] == [2]
