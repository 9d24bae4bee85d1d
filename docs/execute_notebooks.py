"""Execute the notebooks in place, so that their outputs and plots are committed with them.

``make notebooks`` runs this. The docs site shows the notebooks as committed (mkdocs-jupyter with
``execute: false``) and a repository page shows the same outputs; ``tests/unit/test_docs.py``
fails when a notebook's code changed after its outputs were made. Each notebook runs on this
interpreter, offline, on a throwaway Keel home, as ``tests/integration/test_notebooks.py`` runs
it; the home's path is written as ``$KEEL_HOME`` in the outputs, so a run on another machine
changes only what the notebook computed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
CELL_TIMEOUT_S = 300


def sources_digest(nb: nbformat.NotebookNode) -> str:
    """The sha256 of the notebook's code cells, recorded when its outputs were made."""
    sources = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    return hashlib.sha256(json.dumps(sources).encode()).hexdigest()


def _kernel_manager(spec_dir: Path) -> AsyncKernelManager:
    """A kernel manager whose ``python3`` kernel is this interpreter, nothing else."""
    kernel_dir = spec_dir / "python3"
    kernel_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3",
        "language": "python",
    }
    (kernel_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir)])
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)


def _environment(home: Path) -> dict[str, str]:
    """This process's environment without Keel's or a model's settings, on a throwaway home."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KEEL_", "OPENAI_", "LANGSMITH_", "LANGCHAIN_"))
    }
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = sys.prefix
    env["KEEL_HOME"] = str(home)
    env["LANGSMITH_TRACING"] = "false"
    return env


def _hide_home(nb: nbformat.NotebookNode, home: Path) -> None:
    """Write the throwaway home as ``$KEEL_HOME`` in every text output."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = output["text"].replace(str(home), "$KEEL_HOME")
            plain = output.get("data", {}).get("text/plain")
            if isinstance(plain, str):
                output["data"]["text/plain"] = plain.replace(str(home), "$KEEL_HOME")


def execute(path: Path) -> float:
    """Run one notebook top to bottom and write it back with its outputs; the seconds it took."""
    nb = nbformat.read(path, as_version=4)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="keel-notebook-") as tmp:
        home = Path(tmp) / "keel-home"
        client = NotebookClient(
            nb,
            km=_kernel_manager(Path(tmp) / "kernels"),
            kernel_name="python3",
            timeout=CELL_TIMEOUT_S,
            extra_arguments=["--InteractiveShell.colors=nocolor"],
            resources={"metadata": {"path": str(path.parent)}},
        )
        client.execute(env=_environment(home), cwd=str(path.parent))
        _hide_home(nb, home)
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    nb.metadata["keel"] = {"sources_sha256": sources_digest(nb)}
    _, nb = nbformat.validator.normalize(nb)
    nbformat.write(nbformat.from_dict(nb), path)
    return time.monotonic() - started


def main() -> None:
    """Execute every notebook under notebooks/ (or the paths given), one line each on stderr."""
    paths = [Path(arg) for arg in sys.argv[1:]] or sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    for path in paths:
        seconds = execute(path)
        print(f"{path.relative_to(ROOT)}: executed in {seconds:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
