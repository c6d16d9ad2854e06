"""Shared fixtures of the reporting tests: the project's studies and their fake run directories (made once per
test module with :mod:`study_fixtures`), and the long tables :func:`groupdetr.reporting.study.collect` reads
from them. A test module imports the fixtures it uses by name."""
from __future__ import annotations

import dataclasses
import shutil

import pytest

from groupdetr.reporting import study as S
from study_fixtures import dn_ap, heads_ap, k_ap, make_study_runs, studies, table7_ap

SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def all_studies():
    return studies()


@pytest.fixture(scope="module")
def assignment(all_studies):
    """Table 7 at the fixtures' three seeds (the project's study has five)."""
    return dataclasses.replace(all_studies["ablation_assignment"], seeds=tuple(SEEDS))


@pytest.fixture(scope="module")
def kstudy(all_studies):
    return all_studies["ablation_K"]


@pytest.fixture(scope="module")
def heads(all_studies):
    return all_studies["ablation_heads"]


@pytest.fixture(scope="module")
def dnstudy(all_studies):
    return all_studies["ablation_dn"]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, assignment, kstudy, heads, dnstudy):
    root = tmp_path_factory.mktemp("runs")
    make_study_runs(root, assignment, SEEDS, ap_of=table7_ap)
    make_study_runs(root, kstudy, [0, 1], ap_of=k_ap)
    make_study_runs(root, heads, SEEDS, ap_of=heads_ap)
    make_study_runs(root, dnstudy, SEEDS, ap_of=dn_ap)
    return root


@pytest.fixture(scope="module")
def hruns(heads, runs_root):
    return S.collect(heads, runs_root)


@pytest.fixture(scope="module")
def druns(dnstudy, runs_root):
    return S.collect(dnstudy, runs_root)


@pytest.fixture(scope="module")
def aruns(assignment, runs_root):
    return S.collect(assignment, runs_root)


@pytest.fixture(scope="module")
def kruns(kstudy, runs_root):
    return S.collect(kstudy, runs_root, seeds=[0, 1])


def _copy_runs(runs_root, tmp_path, study_name):
    dst = tmp_path / "runs"
    shutil.copytree(runs_root / study_name, dst / study_name)
    return dst
