"""Ablation studies as data: one YAML file of named studies, read by the workflow and the gatherer.

A study is a recipe-independent set of variants, each a few dotted config overrides, trained for
several seeds; optional extra evaluations of finished runs (one group alone, another postprocess);
and the figures its gathered table needs. The workflow's preset (``cpu`` or ``paper``) supplies the
recipe and preset overrides; a variant's overrides go on top, so the same study runs on the
embedded benchmark and on COCO. Format (``workflows/config/studies.yaml``)::

    ablation_K:
      description: K = 1 ... 11, group assignment, separate self-attention
      paper: Fig. 9                       # the paper artefact it reproduces
      seeds: [0, 1, 2]
      overrides: {}                       # common to every variant
      sweep: {key: model.num_groups, values: [1, 2, 3], name: "K{value}"}   # generated variants
      variants:                           # explicit variants (either or both)
        group_detr: {label: "Group DETR", paper_row: "(d)", overrides: {}}
      evaluations:
        per_group: {variants: [K11], groups: all}                 # eval/group{g}.json, g = 0..K-1
        nms: {variants: [naive_o2m], overrides: {postprocess.nms_iou: 0.7}}   # eval/nms.json
      figures:
        ap_vs_k: {}
        ap_vs_epoch: {variants: [K1, K11]}

Run directories are ``{runs}/{study}/{variant}/seed{seed}`` (the engine's run-directory contract);
extra evaluations land in ``<run>/eval/{name}.json``. Every error is one :class:`StudyError` line
naming the study and the key.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from groupdetr.config import ConfigError, load_config

__all__ = [
    "StudyError",
    "Evaluation",
    "Variant",
    "Study",
    "FIGURES",
    "load_studies",
    "run_dir",
    "override_args",
]

#: figure kinds a study may ask for (drawn by ``groupdetr.reporting.study``).
FIGURES = ("ap_vs_k", "ap_vs_epoch", "per_group_ap", "instability", "variants")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class StudyError(ValueError):
    """An invalid study file; the message is one line naming the study and the key."""


@dataclass(frozen=True)
class Evaluation:
    """An extra evaluation of a finished run: ``groupdetr eval RUN [--group g] [--set ...]``."""

    name: str  # file stem under <run>/eval/
    group: int | None = None
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...]  # dotted key=value, after the study's common overrides
    label: str
    paper_row: str | None = None


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    paper: str | None
    seeds: tuple[int, ...]
    variants: dict[str, Variant]
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)

    def evaluations_for(self, variant: str, num_groups: int) -> list[Evaluation]:
        """The extra evaluations of ``variant`` (whose model has ``num_groups`` groups), in order."""
        out: list[Evaluation] = []
        for name, spec in self.evaluations.items():
            if variant not in spec.get("variants", []):
                continue
            overrides = tuple(override_args(spec.get("overrides") or {}))
            groups = spec.get("groups")
            if groups is None:
                out.append(Evaluation(name=name, overrides=overrides))
                continue
            if groups == "all":
                groups = list(range(num_groups))
            for g in groups:
                if not 0 <= int(g) < num_groups:
                    raise StudyError(f"study {self.name}: evaluations.{name}: group {g} does not exist "
                                     f"in variant {variant} (K={num_groups})")
                out.append(Evaluation(name=f"group{int(g)}", group=int(g), overrides=overrides))
        return out


def override_args(overrides: dict[str, Any]) -> list[str]:
    """``{"model.num_groups": 3}`` -> ``["model.num_groups=3"]`` (values as YAML flow scalars)."""
    args = []
    for key, value in overrides.items():
        if isinstance(value, str):
            text = value
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
            if text.endswith("\n..."):
                text = text[: -len("\n...")]
            text = text.removesuffix("...").strip()
        args.append(f"{key}={text}")
    return args


def run_dir(runs: str | Path, study: str, variant: str, seed: int) -> Path:
    """The run directory of one (study, variant, seed)."""
    return Path(runs) / study / variant / f"seed{seed}"


def _expect(cond: bool, msg: str) -> None:
    if not cond:
        raise StudyError(msg)


def _parse_study(name: str, spec: Any) -> Study:
    where = f"study {name}"
    _expect(bool(_NAME.match(name)), f"{where}: name must be letters, digits, '_', '.', '+' or '-'")
    _expect(isinstance(spec, dict), f"{where}: must be a mapping")
    known = {"description", "paper", "seeds", "overrides", "sweep", "variants", "evaluations", "figures"}
    for key in spec:
        _expect(key in known, f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
    seeds = spec.get("seeds", [0])
    _expect(isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds),
            f"{where}: seeds must be a non-empty list of integers")
    _expect(len(set(seeds)) == len(seeds), f"{where}: seeds repeat")
    common = spec.get("overrides") or {}
    _expect(isinstance(common, dict), f"{where}: overrides must be a mapping of dotted keys to values")

    variants: dict[str, Variant] = {}
    sweep = spec.get("sweep")
    if sweep is not None:
        _expect(isinstance(sweep, dict) and {"key", "values"} <= set(sweep) and set(sweep) <= {"key", "values", "name"},
                f"{where}: sweep needs key and values (and optionally name, e.g. 'K{{value}}')")
        _expect(isinstance(sweep["values"], list) and sweep["values"], f"{where}: sweep.values must be a non-empty list")
        template = sweep.get("name", sweep["key"].rsplit(".", 1)[-1] + "{value}")
        for value in sweep["values"]:
            vname = template.format(value=value)
            overrides = {**common, sweep["key"]: value}
            variants[vname] = Variant(vname, tuple(override_args(overrides)), label=vname)
    for vname, vspec in (spec.get("variants") or {}).items():
        vspec = vspec or {}
        _expect(isinstance(vspec, dict) and set(vspec) <= {"label", "paper_row", "overrides"},
                f"{where}: variant {vname}: keys are label, paper_row, overrides")
        _expect(vname not in variants, f"{where}: variant {vname} defined twice")
        overrides = {**common, **(vspec.get("overrides") or {})}
        variants[vname] = Variant(vname, tuple(override_args(overrides)), label=str(vspec.get("label", vname)),
                                  paper_row=vspec.get("paper_row"))
    _expect(bool(variants), f"{where}: no variants (give sweep or variants)")
    for vname in variants:
        _expect(bool(_NAME.match(vname)), f"{where}: variant name {vname!r} must be letters, digits, '_', '.', '+' or '-'")

    evaluations = spec.get("evaluations") or {}
    _expect(isinstance(evaluations, dict), f"{where}: evaluations must be a mapping")
    for ename, espec in evaluations.items():
        _expect(isinstance(espec, dict) and set(espec) <= {"variants", "groups", "overrides"} and "variants" in espec,
                f"{where}: evaluations.{ename}: keys are variants (required), groups, overrides")
        for v in espec["variants"]:
            _expect(v in variants, f"{where}: evaluations.{ename}: unknown variant {v!r}")
        groups = espec.get("groups")
        _expect(groups is None or groups == "all" or (isinstance(groups, list) and all(isinstance(g, int) for g in groups)),
                f"{where}: evaluations.{ename}.groups must be 'all' or a list of group indices")
        _expect(groups is not None or bool(_NAME.match(ename)) and not re.match(r"^group\d+$", ename),
                f"{where}: evaluations.{ename}: name must be a plain word other than group<g>")

    figures = spec.get("figures") or {}
    _expect(isinstance(figures, dict), f"{where}: figures must be a mapping")
    for fname, fspec in figures.items():
        _expect(fname in FIGURES, f"{where}: unknown figure {fname!r} (known: {', '.join(FIGURES)})")
        fspec = fspec or {}
        figures[fname] = fspec
        for v in list(fspec.get("variants", [])) + ([fspec["variant"]] if "variant" in fspec else []):
            _expect(v in variants, f"{where}: figures.{fname}: unknown variant {v!r}")

    return Study(name=name, description=str(spec.get("description", "")), paper=spec.get("paper"),
                 seeds=tuple(seeds), variants=variants, evaluations=evaluations, figures=figures)


def load_studies(path: str | Path, recipe: str | None = None, preset_overrides: list[str] | None = None) -> dict[str, Study]:
    """Read and check a studies file. With ``recipe``, every variant's overrides are also resolved
    against it (plus ``preset_overrides``), so a misspelt key fails here, naming study and variant."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"{path}: no such studies file") from None
    except yaml.YAMLError as e:
        raise StudyError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not data:
        raise StudyError(f"{path}: expected a mapping of study names to studies")
    studies = {name: _parse_study(str(name), spec) for name, spec in data.items()}
    if recipe is not None:
        for study in studies.values():
            for v in study.variants.values():
                try:
                    load_config(recipe, list(preset_overrides or []) + list(v.overrides))
                except ConfigError as e:
                    raise StudyError(f"study {study.name}, variant {v.name}: {e}") from None
    return studies
