"""Every notebook under notebooks/ runs top to bottom, offline, on a throwaway Keel home.

The kernel is this test's own interpreter (the project's virtualenv), through a kernelspec
written to a temporary folder: a ``python3`` kernelspec in the user's Jupyter folders cannot
shadow it. A probe cell appended to each notebook proves which interpreter ran it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(p for p in NOTEBOOKS_DIR.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
CELL_TIMEOUT_S = 300
PROBE_MARK = "keel-kernel-probe:"


def _kernel_manager(spec_dir: Path) -> AsyncKernelManager:
    """A kernel manager whose ``python3`` kernel is ``sys.executable``, nothing else."""
    kernel_dir = spec_dir / "python3"
    kernel_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (Keel test venv)",
        "language": "python",
    }
    (kernel_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir)])
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)


def _kernel_env(home: Path) -> dict[str, str]:
    """The test's environment (already without KEEL_* and OpenAI variables) plus a tmp home."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    env["VIRTUAL_ENV"] = sys.prefix
    env["KEEL_HOME"] = str(home)
    env["LANGSMITH_TRACING"] = "false"
    return env


def _probe_cell() -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(f"import sys\nprint({PROBE_MARK!r}, sys.prefix)")


@pytest.mark.integration
@pytest.mark.parametrize(
    "path",
    NOTEBOOKS or [pytest.param(None, id="no-notebooks")],
    ids=lambda p: str(p.relative_to(NOTEBOOKS_DIR)) if isinstance(p, Path) else None,
)
def test_notebook_runs(path: Path | None, tmp_path: Path) -> None:
    assert path is not None, f"no notebooks under {NOTEBOOKS_DIR}"
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(_probe_cell())
    client = NotebookClient(
        nb,
        km=_kernel_manager(tmp_path / "kernels"),
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        extra_arguments=["--InteractiveShell.colors=nocolor"],  # plain tracebacks in CI logs
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute(env=_kernel_env(tmp_path / "keel-home"), cwd=str(path.parent))
    except CellExecutionError as err:
        pytest.fail(f"{path.relative_to(ROOT)}: a cell raised\n{err}", pytrace=False)

    probe = "".join(out.get("text", "") for out in nb.cells[-1].outputs)
    assert probe.strip() == f"{PROBE_MARK} {sys.prefix}", (
        f"the notebook ran on another interpreter: {probe!r}, expected {sys.prefix}"
    )
    assert (tmp_path / "keel-home").is_dir(), "the notebook did not use KEEL_HOME"
