"""Run the thin notebooks of ``notebooks/`` headless, and let them find the results they read.

A notebook reads only a results root (``results/`` of the repository by default): the gathered
studies (``results/<study>/``, see :mod:`groupdetr.reporting.study`) and the paper's reported
numbers (``results/paper/``). :func:`execute_notebook` passes the root to the kernel as the
environment variable ``GROUPDETR_RESULTS``; a notebook's first cell calls :func:`results_root`.
"""
from __future__ import annotations

import os
from pathlib import Path

from groupdetr.errors import NotebookError, NotebookFailed

__all__ = ["ENV", "NotebookError", "NotebookFailed", "repo_root", "results_root", "paper_dir", "paper_deltas",
           "default_out", "html_path", "execute_notebook"]

#: environment variable naming the results root a notebook reads.
ENV = "GROUPDETR_RESULTS"


def repo_root() -> Path:
    """The source checkout this package lives in (an editable install)."""
    return Path(__file__).resolve().parents[2]


def results_root() -> Path:
    """The results root of a notebook: ``$GROUPDETR_RESULTS``, else the first ``results/`` holding
    ``paper/reported.csv`` in the working folder or above it, else ``<repo>/results``."""
    env = os.environ.get(ENV)
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "results" / "paper" / "reported.csv").is_file():
            return folder / "results"
    return repo_root() / "results"


def paper_dir(results: str | Path) -> Path:
    """The paper's reported numbers for a results root: ``<results>/paper`` when it holds them, else
    the repository's ``results/paper`` (a workflow may gather into another folder, e.g. /tmp/.../results)."""
    own = Path(results) / "paper"
    return own if (own / "reported.csv").is_file() else repo_root() / "results" / "paper"


def paper_deltas(study: str, studies_file: str | Path | None = None) -> list[dict]:
    """The paper's deltas that ``study`` compares with (its ``comparisons:`` in the studies file, by default
    the repository's ``workflows/config/studies.yaml``): one dict per comparison with comparison, label, a, b,
    metric, paper_table, paper_a (the paper's value of a), paper_delta (points for AP), paper_note. What a notebook
    shows before the study is gathered; once gathered, ``comparisons.csv`` carries the same beside our effects."""
    from groupdetr.studies import load_studies

    spec = load_studies(studies_file or repo_root() / "workflows" / "config" / "studies.yaml")[study]
    return [{"comparison": c.name, "label": c.label, "a": c.a, "b": c.b, "metric": c.metric,
             "paper_table": c.paper_table, "paper_a": c.paper_base, "paper_delta": c.paper_delta,
             "paper_note": c.paper_note}
            for c in spec.comparisons.values()]


def default_out(notebook: str | Path, results: str | Path | None = None) -> Path:
    """Where ``groupdetr notebook`` keeps an executed notebook unless told otherwise:
    ``<results root>/notebooks/<name>.ipynb`` (the workflow's place for them too)."""
    root = Path(results) if results is not None else repo_root() / "results"
    return root / "notebooks" / Path(notebook).name


def html_path(out: str | Path) -> Path:
    """The HTML rendering written beside an executed notebook ``out``: the same name, ``.html``."""
    return Path(out).with_suffix(".html")


def _write_html(nb, path: Path) -> None:
    """The executed notebook as a standalone HTML page (nbconvert's HTML exporter, inputs and outputs)."""
    from nbconvert import HTMLExporter

    from groupdetr.rundir import atomic_write_text

    body, _ = HTMLExporter().from_notebook_node(nb)
    atomic_write_text(path, body)


def _failed_cell(nb) -> tuple[int, str]:
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                first = (str(output.get("evalue", "")).splitlines() or [""])[0]
                return i, f"{output.get('ename', 'Error')}: {first}"
    return -1, "unknown error"


def execute_notebook(path: str | Path, out: str | Path | None = None, results_root: str | Path | None = None,
                     timeout: int = 600, kernel_name: str = "python3", html: bool = False):
    """Execute every cell of the notebook at ``path`` in a fresh kernel (working folder: the
    notebook's), with ``$GROUPDETR_RESULTS`` set to ``results_root`` (default: ``<repo>/results``).

    The executed notebook (with outputs) is returned and, with ``out``, written there atomically,
    also when a cell fails (to read the traceback); with ``html`` too, its HTML rendering beside it
    (:func:`html_path`). The notebook file itself is never modified.

    Raises:
        NotebookError: ``path`` is missing or not a notebook, or ``results_root`` is not a folder.
        NotebookFailed: a cell raised (one line: notebook, cell index, error).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    path = Path(path)
    if not path.is_file():
        raise NotebookError(f"{path}: no such notebook")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # nbformat raises several types for a damaged file
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise NotebookError(f"{path}: not a readable notebook ({why})") from None
    root = Path(results_root) if results_root is not None else repo_root() / "results"
    if not root.is_dir():
        raise NotebookError(f"{root}: results root is not a folder")
    env = {**os.environ, ENV: str(root.resolve())}
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(path.resolve().parent)}})
    error = None
    try:
        client.execute(env=env)
    except CellExecutionError:
        index, what = _failed_cell(nb)
        error = f"{path}: cell {index} failed: {what}"
    except CellTimeoutError:
        error = f"{path}: a cell ran longer than {timeout} s"
    except DeadKernelError as e:
        error = f"{path}: the kernel died ({str(e).splitlines()[0] if str(e) else 'no message'})"
    if out is not None:
        from groupdetr.rundir import atomic_write_text

        atomic_write_text(Path(out), nbformat.writes(nb))
        if html:
            _write_html(nb, html_path(out))
    if error:
        raise NotebookFailed(error)
    return nb
