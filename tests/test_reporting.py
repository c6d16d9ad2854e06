"""The paper's reported numbers, reshaped for the tables."""
from pathlib import Path

import pandas as pd
import pytest

from groupdetr.reporting.paper import load_reported, main_results, table7, write_paper_tables

PAPER = Path(__file__).resolve().parents[1] / "results" / "paper"


@pytest.fixture(scope="module")
def reported():
    return load_reported(PAPER / "reported.csv")


def test_transcription_is_complete_and_sourced(reported):
    assert len(reported) == 276 and reported["source"].notna().all() and (reported["source"].str.len() > 10).all()


def test_table7_rows_in_order_with_the_papers_numbers(reported):
    t = table7(reported)
    assert t["row"].tolist() == ["a", "b", "c", "d"]
    assert "variant" not in t  # which of our variants stands for a row is the study spec's paper_row
    assert t["K"].astype(int).tolist() == [1, 1, 11, 11] and t.loc[3, "self_attention"] == "separate per group"
    assert t["mAP"].tolist() == [32.6, 8.4, 34.8, 37.6]
    assert t.loc[t["row"] == "d", ["APs", "APm", "APl"]].values.tolist() == [[18.2, 40.7, 55.9]]
    assert t["source"].str.contains("Table 7").all()


def test_main_results_pair_baseline_and_group_detr(reported):
    m = main_results(reported)
    row = m[(m["table"] == "Table3") & (m["detector"] == "C-DETR")].iloc[0]
    assert (row["baseline_mAP"], row["group_detr_mAP"], row["gain"]) == (32.6, 37.6, 5.0)
    dino36 = m[(m["table"] == "Table4") & (m["detector"] == "DINO-4scale")]
    assert sorted(dino36["backbone"]) == ["ResNet-50", "Swin-L"]  # two 36-ep rows told apart by backbone
    assert m[["baseline_mAP", "group_detr_mAP"]].notna().all().all() and (m["gain"] > 0).all()
    assert len(m) == 17


def test_committed_tables_are_exactly_what_the_command_generates(reported, tmp_path):
    for path in write_paper_tables(reported, tmp_path):
        assert path.read_bytes() == (PAPER / path.name).read_bytes(), "regenerate with `groupdetr paper-tables`"


def test_missing_column_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"table": ["Table7"]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="missing columns"):
        load_reported(bad)
