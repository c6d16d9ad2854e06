"""The notebooks run headless on a small gathered results root, and on one where nothing is gathered."""
from __future__ import annotations

import shutil

import nbformat
import pytest

from groupdetr.cli import main as cli_main
from groupdetr.reporting import study as S
from groupdetr.reporting.notebooks import ENV, NotebookError, NotebookFailed, execute_notebook, paper_dir, results_root
from study_fixtures import (REPO, detectors_ap, dn_ap, heads_ap, make_cost_runs, make_study_runs, studies, table1_ap,
                            table7_ap)

NOTEBOOKS = REPO / "notebooks"
NAMES = ("table7", "ablation_K", "main_results", "table5_6", "fig8", "detectors", "table1", "table2_fig7")


def _paper(root):
    (root / "paper").mkdir(parents=True)
    for csv in (REPO / "results" / "paper").glob("*.csv"):
        shutil.copy(csv, root / "paper" / csv.name)
    return root


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """results/ with the paper's CSVs and every study gathered from fake runs (2 seeds)."""
    tmp = tmp_path_factory.mktemp("nb")
    root = _paper(tmp / "results")
    all_studies = studies()
    make_study_runs(tmp / "runs", all_studies["ablation_assignment"], [0, 1], ap_of=table7_ap)
    # ablation_K with seconds and memory growing with K (Fig. 7), the training-time study with Table 2's hours
    make_cost_runs(tmp / "runs", all_studies["ablation_K"], all_studies["ablation_training_time"], [0, 1])
    make_study_runs(tmp / "runs", all_studies["ablation_enhancement"], [0, 1], ap_of=table1_ap)
    make_study_runs(tmp / "runs", all_studies["ablation_heads"], [0, 1], ap_of=heads_ap)
    make_study_runs(tmp / "runs", all_studies["ablation_dn"], [0, 1], ap_of=dn_ap)
    make_study_runs(tmp / "runs", all_studies["ablation_detectors"], [0, 1], ap_of=detectors_ap)
    for name in ("ablation_assignment", "ablation_K", "ablation_heads", "ablation_dn", "ablation_detectors",
                 "ablation_enhancement", "ablation_training_time"):
        S.gather(all_studies[name], tmp / "runs", root / name, seeds=[0, 1])
    return root


def _text(nb) -> str:
    """Everything the notebook printed or displayed as text/plain, text/markdown or text/html."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            data = out.get("data", {})
            parts += [data.get(k, "") for k in ("text/plain", "text/markdown", "text/html")]
    return "\n".join(parts)


def _images(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def test_notebooks_are_stored_without_outputs_and_small():
    for name in NAMES:
        path = NOTEBOOKS / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert path.stat().st_size < 10_000
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{name}: clear the outputs"
        assert "results_root()" in nb.cells[1].source  # the first code cell locates the results root


@pytest.fixture(scope="module")
def executed_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("executed")


@pytest.fixture(scope="module")
def executed(results, executed_dir):
    return {name: execute_notebook(NOTEBOOKS / f"{name}.ipynb", out=executed_dir / f"{name}.ipynb",
                                   results_root=results, timeout=900) for name in NAMES}


def test_table7_notebook(executed, results):
    text = _text(executed["table7"])
    assert str(results) in text  # read the root it was given
    for label in ("One-to-one (K=1)", "Naive one-to-many", "Naive one-to-many + nms", "Group assignment, shared SA",
                  "Group DETR"):
        assert label in text
    assert "32.6" in text and "37.6" in text  # the paper's mAP beside ours
    assert "paper order, best first: d > c > a > b" in text and "same order: True" in text
    assert "(b) naive one-to-many over (a) one-to-one" in text and "confirms_paper" in text  # the claims
    assert "not COCO AP" in text
    assert _images(executed["table7"]) == 1


def test_ablation_k_notebook(executed):
    text = _text(executed["ablation_K"])
    assert "AP(K11) - AP(K1) = +5.0 points" in text and "significant: True" in text
    assert "paper (Table3): +5.0 points on 32.6, +15.3 % of K = 1" in text  # the comparable axis
    assert "flat from K = 6" in text and "paper: stable once K reaches 11" in text
    assert "paper (COCO): 37.5 ± 0.1, ± 0.27 %" in text and "over 11 groups" in text
    assert _images(executed["ablation_K"]) == 4


def test_main_results_notebook(executed):
    text = _text(executed["main_results"])
    assert ("gathered studies: ablation_K, ablation_assignment, ablation_detectors, ablation_dn, ablation_enhancement, "
            "ablation_heads, ablation_training_time") in text
    assert "No COCO reproduction gathered yet" in text and "DINO-4scale" in text
    assert "ablation_assignment: group_detr - one_to_one" in text and "ablation_K: K11 - K1" in text
    assert "not COCO AP" in text and "+5.0 mAP" in text


def test_table5_6_notebook(executed):
    nb = executed["table5_6"]
    text = _text(nb)
    for paper_number in ("42.0", "45.0", "38.5", "39.7", "PETR v2", "Mask2Former"):
        assert paper_number in text  # the paper's Tables 5 and 6
    assert "sign matches the paper in 4 of 4 comparisons; significant on the paper's side in 3 of 4" in text  # 2 seeds
    assert "Ours: the embedded benchmark" in text and "not COCO or nuScenes scores" in text
    assert ("| Row | Variant | n | bbox/AP (points) | bbox/AP50 (points) | segm/AP (points) | segm/AP50 (points) "
            "| 3d/mAP (points) | 3d/NDS (points) |") in text
    assert "Instance segmentation: K=11 over K=1" in text and "3d/NDS" in text
    assert _images(nb) == 1


def test_fig8_notebook(executed):
    nb = executed["fig8"]
    text = _text(nb)
    assert "DN on top of Group DETR" in text and "dn_on_groups" in text and "Fig8" in text
    assert "sign matches the paper in 5 of 5 comparisons; significant on the paper's side in 5 of 5" in text
    assert "Ours: the embedded benchmark" in text and "not COCO or nuScenes scores" in text
    assert "DAB-DETR + DN + Group DETR" in text
    assert _images(nb) == 3


def test_detectors_notebook(executed):
    nb = executed["detectors"]
    text = _text(nb)
    for row in ("DAB-Deformable-DETR", "DINO-4scale", "C-DETR"):
        assert row in text  # the paper's Tables 3-4
    assert "DINO: K=11 over K=1" in text and "Conditional DETR: K=11 over K=1" in text
    assert "sign matches the paper in 5 of 5 comparisons" in text
    assert "Ours: the embedded benchmark" in text
    assert "first_epoch" in text and "reached" in text and "DINO, K=11" in text  # leaving the plateau, per detector
    assert _images(nb) == 3


def test_table1_notebook(executed):
    nb = executed["table1"]
    text = _text(nb)
    for number in ("40.6", "41.5", "42.9"):
        assert number in text  # the paper's Table 1 beside ours
    assert "(a) encoder fixed, decoder retrained with K=1" in text and "Starting model: C-DETR trained with K=1" in text
    assert "paper order, best first: c > b > a" in text and "our order,   best first: c > b > a" in text
    assert "(b) over (a): groups enhance the decoder (encoder fixed)" in text and "confirms_paper" in text
    assert "sign matches the paper in 2 of 2 comparisons" in text and "not COCO AP" in text
    assert _images(nb) == 2


def test_table2_fig7_notebook(executed):
    nb = executed["table2_fig7"]
    text = _text(nb)
    assert "baseline_equal_time" in text and "34.4" in text and "5.8" in text  # Table 2's longer baseline
    assert "Group DETR at 1x over the baseline trained as long" in text
    assert "sign matches the paper in 3 of 3 comparisons" in text
    # Fig. 7: K = 11 over K = 1 from the fixtures' logs (1.56 / 1.06 s per 10 iterations, +100 MiB), the paper's beside
    assert "K = 11 over K = 1: time per iteration x 1.47 (paper x 1.22), peak memory +100 MiB (paper +1.2 GB" in text
    assert _images(nb) == 2


def test_executed_copies_are_written_and_the_sources_stay_clean(executed, executed_dir):
    for name in NAMES:
        copy = nbformat.read(executed_dir / f"{name}.ipynb", as_version=4)
        assert _text(copy) == _text(executed[name]) and _images(copy) == _images(executed[name])
        source = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        assert all(c.outputs == [] for c in source.cells if c.cell_type == "code")


def test_notebooks_say_when_nothing_is_gathered(tmp_path):
    root = tmp_path / "results"  # nothing at all: the paper's numbers come from the repository's results/paper
    root.mkdir()
    texts = {name: _text(execute_notebook(NOTEBOOKS / f"{name}.ipynb", results_root=root, timeout=900))
             for name in NAMES}
    assert "Study `ablation_assignment` not gathered yet" in texts["table7"] and "37.6" in texts["table7"]
    assert "Study `ablation_K` not gathered yet" in texts["ablation_K"]
    assert "gathered studies: none yet" in texts["main_results"]
    assert "No embedded-benchmark study gathered yet" in texts["main_results"]
    for name, study in (("table5_6", "ablation_heads"), ("fig8", "ablation_dn"), ("detectors", "ablation_detectors")):
        assert f"Study `{study}` not gathered yet" in texts[name]
        assert "sign matches" not in texts[name]  # nothing of ours to compare
    assert "45.0" in texts["table5_6"] and "39.7" in texts["table5_6"]  # the paper's side still shows
    assert "40.6" in texts["fig8"] and "dn_on_groups" in texts["fig8"]  # the study's deltas before any run
    assert "Study `ablation_enhancement` not gathered yet" in texts["table1"]
    assert "42.9" in texts["table1"] and "encoder Group, decoder Group" in texts["table1"]  # the paper's side
    assert "Study `ablation_training_time` not gathered yet" in texts["table2_fig7"]
    assert "Study `ablation_K` not gathered yet" in texts["table2_fig7"]
    assert "baseline longer" in texts["table2_fig7"] and "1.7" in texts["table2_fig7"]  # Table 2, Sec. 3.2
    assert "group_over_equal_time" in texts["table2_fig7"]  # the study's deltas before any run


def test_a_failing_cell_is_one_line_and_the_executed_copy_is_kept(tmp_path, capsys):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("import os\nprint(os.environ['GROUPDETR_RESULTS'])"),
                                         nbformat.v4.new_code_cell("1 / 0")])
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    out = tmp_path / "bad.out.ipynb"
    rc = cli_main(["notebook", str(path), "--out", str(out), "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and err == f"groupdetr: {path}: cell 2 failed: ZeroDivisionError: division by zero\n"
    executed = nbformat.read(out, as_version=4)
    assert str(tmp_path.resolve()) in _text(executed)  # the results root reached the kernel
    with pytest.raises(NotebookFailed):
        execute_notebook(path, results_root=tmp_path)


def test_the_command_keeps_the_executed_notebook_and_its_html_by_default(tmp_path, capsys):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    path = tmp_path / "small.ipynb"
    nbformat.write(nb, path)
    results = tmp_path / "results"
    results.mkdir()
    assert cli_main(["notebook", str(path), "--results", str(results)]) == 0
    kept = results / "notebooks" / "small.ipynb"
    assert "42" in _text(nbformat.read(kept, as_version=4))
    assert "42" in (results / "notebooks" / "small.html").read_text()
    assert cli_main(["notebook", str(path), "--results", str(results), "--out", str(tmp_path / "x.ipynb"), "--no-html"]) == 0
    assert (tmp_path / "x.ipynb").is_file() and not (tmp_path / "x.html").exists()
    assert cli_main(["notebook", str(path), "--results", str(tmp_path), "--out", "-"]) == 0
    assert not (tmp_path / "notebooks").exists()  # '-': nothing kept
    capsys.readouterr()


def test_bad_notebook_input_is_refused(tmp_path, capsys):
    assert cli_main(["notebook", str(tmp_path / "none.ipynb")]) == 2
    assert "no such notebook" in capsys.readouterr().err
    (tmp_path / "x.ipynb").write_text("not json")
    with pytest.raises(NotebookError, match="not a readable notebook"):
        execute_notebook(tmp_path / "x.ipynb")
    with pytest.raises(NotebookError, match="not a folder"):
        execute_notebook(NOTEBOOKS / "table7.ipynb", results_root=tmp_path / "missing")


def test_results_root_prefers_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, str(tmp_path))
    assert results_root() == tmp_path.resolve()
    monkeypatch.delenv(ENV)
    monkeypatch.chdir(NOTEBOOKS)
    assert results_root() == REPO / "results"
    assert paper_dir(tmp_path) == REPO / "results" / "paper"  # no paper/ under the root: the repository's
    _paper(tmp_path / "r")
    assert paper_dir(tmp_path / "r") == tmp_path / "r" / "paper"
