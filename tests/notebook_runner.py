"""``python -m tests.notebook_runner NOTEBOOK OUT CWD``: execute a notebook with nbclient, in
a fresh kernel whose working folder is CWD, as Colab would; each output is also printed as
it comes (so a test watching this process's output sees the training's lines live), and the
executed notebook is written to OUT. Exits 1 when a cell raised."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


class EchoingClient(NotebookClient):  # type: ignore[misc]
    """Prints each stream, result and error output as the kernel sends it."""

    def output(self, outs: list[Any], msg: dict[str, Any], display_id: Any,
               cell_index: int) -> Any:
        content = msg.get("content", {})
        kind = msg.get("msg_type")
        if kind == "stream":
            print(content.get("text", ""), end="", flush=True)
        elif kind == "error":
            print("\n".join(content.get("traceback", [])), flush=True)
        elif kind in ("execute_result", "display_data"):
            print(content.get("data", {}).get("text/plain", ""), flush=True)
        return super().output(outs, msg, display_id, cell_index)


def main(notebook: str, out: str, cwd: str) -> int:
    nb = nbformat.read(notebook, as_version=4)
    client = EchoingClient(nb, timeout=600, kernel_name="python3",
                           resources={"metadata": {"path": cwd}})
    code = 0
    try:
        client.execute()
    except CellExecutionError:
        code = 1
    Path(out).write_text(nbformat.writes(nb), encoding="utf-8")
    return code


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:4]))
