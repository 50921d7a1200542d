"""The tour notebook (notebooks/tour.ipynb) runs from top to bottom and is committed without outputs."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "tour.ipynb"


def read_notebook():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    return nb


def test_tour_committed_without_outputs():
    code_cells = [cell for cell in read_notebook().cells if cell.cell_type == "code"]
    assert code_cells
    for cell in code_cells:
        assert cell.outputs == [], f"cell {cell.id} has outputs; strip them before committing"
        assert cell.execution_count is None, f"cell {cell.id} has an execution count; strip outputs before committing"


def test_tour_executes():
    """Every cell runs without error (the notebook asserts that every trained model agrees with the
    closed form) and the figure is drawn.  The timeout only guards against a hang."""
    nb = read_notebook()
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    outputs = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    assert any("image/png" in output.get("data", {}) for output in outputs), "the figure was not drawn"
