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
        baseline: {overrides: {model.num_groups: 1}, reuse: other_study/K1}   # its runs: see below
        retrain: {overrides: {train.freeze: [backbone]}, init_from: {variant: baseline, parts: [backbone]}}
        longer: {overrides: {model.num_groups: 1}, equal_time: {to: group_detr, measured_on: baseline}}
      evaluations:
        per_group: {variants: [K11], groups: all}                 # eval/group{g}.json, g = 0..K-1
        nms: {variants: [naive_o2m], overrides: {postprocess.nms_iou: 0.7}}   # eval/nms.json
      figures:
        ap_vs_k: {}                       # the paper's K=11 endpoint: the comparison of K1 and K11
        per_group_ap: {variant: K11, paper: {table: Fig4, median: 37.5, spread: 0.1}}   # the paper's Fig. 4 band
        ap_vs_epoch: {variants: [K1, K11], metric: bbox/AP}   # metric: optional, default bbox/AP
        comparisons: {}                   # the declared comparisons beside the paper's deltas
        query_augmentation: {variant: K11, seed: 0, images: [2, 3], agreement_images: all}   # from its checkpoint
      metrics: [bbox/AP, segm/AP]         # columns of the gathered table (default: the six bbox APs)
      comparisons:                        # the effects the study reports, each mean(b) - mean(a) over seeds
        seg:
          label: "Instance seg.: K=11 over K=1"
          a: seg_K1
          b: seg_K11
          metric: segm/AP                 # <family>/<stat>, family one of bbox, segm, 3d
          paper: {table: Table6, base: 38.5, delta: 1.2, note: "Mask2Former R50 12 ep mask mAP 38.5 -> 39.7"}

**Metrics** are the keys of a run's ``metrics.json``: ``bbox/AP`` ... for every task, ``segm/AP`` ... for
``model.task=instance_segmentation``, ``3d/mAP``, ``3d/NDS``, ``3d/ATE`` ... for ``detection_3d``
(:data:`METRIC_FAMILIES`). A study's ``metrics`` list chooses the gathered table's columns, so a study whose
variants predict different things shows each head's own metric (a variant without a metric shows "–"); each in
its unit (:func:`groupdetr.reporting.units.metric_unit`: AP and NDS in points, x 100; 3D errors in m and rad).

**Comparisons** declare, as data, which effects a study reports: ``groupdetr gather`` writes one row per
comparison to ``comparisons.csv`` (Welch 95 % CI of mean(b) - mean(a), sign, significance) with the paper's
reported delta (``paper.delta``, in the metric's reported unit: points for AP, e.g. 1.5 mAP; optional) and
whether the signs match, and a section of the study's ``README.md``. ``paper.base`` (optional) is the paper's
value of ``a``, the baseline its delta is over: with it the effect is also compared relative to the baseline
(in % of it), the axis on which the paper's COCO numbers and ours compare. ``paper.table`` names the artefact as
in ``results/paper/reported.csv`` (``Table5``, ``Fig8`` ...); ``paper.note`` says where the numbers come from.
Both numbers are transcriptions: a test holds each against ``reported.csv``.

**Reused runs**: a variant that is the same experiment as another study's variant (the one-to-one
baseline is ``ablation_K``'s K1, Table 7's row (a), and the heads study's 2D K=1) says so with
``reuse: <study>/<variant>``; its runs are that variant's runs, trained once under that study's directory
and read by both studies. It still spells its own overrides, and they must resolve to exactly the same config
as the reused variant's under the workflow's preset (checked by :func:`check_reuse`, one line naming the first
key that differs), so a reuse can never silently stand for another experiment. A reusing variant declares no
extra evaluations of its own (they belong to the study that owns the runs) and cannot itself be reused.

**Runs that start from runs**: ``init_from: {variant: v, parts: [...]}`` starts each seed's run from the finished
run of variant ``v`` of the same study and seed (``model.init_from``: those parts, or the whole model without
``parts``; ``v`` may reuse another study's runs). The workflow makes that run an input of this one, so it is
trained first and once. Freezing is an ordinary override (``train.freeze``).

**Equal training time** (paper Table 2): ``equal_time: {to: b, measured_on: a}`` trains the variant for as many
epochs as make its training time reach that of variant ``b``: ``groupdetr equal-time`` derives them from the
finished runs' logged seconds (``b``'s total over ``a``'s per epoch; ``a`` is this variant's config on the
preset's schedule) into :func:`schedule_file`, which the variant's runs read (``--set-from``).

Run directories are ``{runs}/{study}/{variant}/seed{seed}`` (the engine's run-directory contract;
:meth:`Study.run_path` follows reuses); extra evaluations land in ``<run>/eval/{name}.json``. Every error
is one :class:`StudyError` line naming the study and the key.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from groupdetr.config import ConfigError, load_config, override_args  # override_args: re-exported
from groupdetr.errors import StudyError
from groupdetr.names import FIGURE_KINDS
from groupdetr.rundir import run_dir  # re-exported: the contract's path of a run

__all__ = [
    "StudyError",
    "Evaluation",
    "EvalJob",
    "Variant",
    "StartFrom",
    "EqualTime",
    "Comparison",
    "Study",
    "FIGURES",
    "METRIC_FAMILIES",
    "load_studies",
    "parse_seeds",
    "run_dir",
    "override_args",
    "check_reuse",
    "SCHEDULE",
    "schedule_file",
]

#: the file of a variant with ``equal_time``: the overrides of its derived schedule (``groupdetr equal-time``),
#: beside its seeds' run directories: ``{runs}/{study}/{variant}/schedule.yaml``
SCHEDULE = "schedule.yaml"
#: the runs root under which :func:`load_studies` resolves the configs of variants that start from another run
#: (the path enters ``model.init_from.run``; only equality between two variants' paths matters there)
_RESOLVE_RUNS = "runs"


def schedule_file(runs_root: str | Path, study: str, variant: str) -> Path:
    """The derived schedule of ``variant`` (one with ``equal_time``), shared by all its seeds."""
    return Path(runs_root) / study / variant / SCHEDULE


#: figure kinds a study may ask for (drawn by :data:`groupdetr.reporting.figures.FIGURES`).
FIGURES = FIGURE_KINDS
#: metric families of a run's evaluation stats (``<family>/<stat>``): boxes (every task), instance masks,
#: 3D boxes (nuScenes style: mAP, NDS, ATE ...).
METRIC_FAMILIES = ("bbox", "segm", "3d")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_METRIC = re.compile(r"^([A-Za-z0-9]+)/[A-Za-z0-9@._-]+$")
#: keys of one figure entry: the variants it draws (``variants``, or one ``variant``) and its metric.
_FIGURE_KEYS = {"variants", "variant", "metric"}
#: the figure kinds that draw a band of the paper's that no comparison holds, and the keys of their
#: ``paper:`` entry (``table`` as in ``results/paper/reported.csv``; numbers in the metric's unit): Fig. 4's
#: median over the groups and its ± spread.
_FIGURE_PAPER_KEYS = {"per_group_ap": {"table", "median", "spread"}}
#: keys of the figure kinds drawn from a run's checkpoint rather than from the long table: the run (``variant``,
#: required; ``seed``, default the first gathered one), the val images drawn (``images``: ids) and those the
#: printed agreement is pooled over (``agreement_images``: a count or ``all``; default the drawn ones).
_CHECKPOINT_FIGURE_KEYS = {"query_augmentation": {"variant", "seed", "images", "agreement_images"}}


@dataclass(frozen=True)
class Evaluation:
    """An extra evaluation of a finished run: ``groupdetr eval RUN [--group g] [--set ...]``."""

    name: str  # file stem under <run>/eval/
    group: int | None = None
    overrides: tuple[str, ...] = ()
    job: str = ""  # the study's evaluation entry (the job that writes the file: :class:`EvalJob`)


@dataclass(frozen=True)
class EvalJob:
    """One job of a study's extra evaluations: ``groupdetr eval RUN [--group ...] [--set ...] --out <name>.json``.

    ``groups`` None: one evaluation of the model as configured. A tuple: each of those groups evaluated
    alone, in one job (``--groups g ...``), writing ``group{g}.json`` per group and
    the index ``<name>.json`` that the workflow tracks."""

    name: str
    groups: tuple[int, ...] | None = None
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class StartFrom:
    """A variant's runs start from another variant's finished run of the same seed (``model.init_from``):
    ``parts`` of it (None: the whole model); the workflow trains that run first."""

    variant: str  # a variant of the same study (it may reuse another study's runs)
    parts: tuple[str, ...] | None = None


@dataclass(frozen=True)
class EqualTime:
    """A variant trained as long as another variant took (paper Table 2): its epochs are derived from the
    finished runs' logged training seconds, ``to``'s total against ``measured_on``'s per epoch (a variant
    with this variant's config on the preset's schedule), by ``groupdetr equal-time``."""

    to: str
    measured_on: str


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...]  # dotted key=value, after the study's common overrides
    label: str
    paper_row: str | None = None
    reuse: tuple[str, str] | None = None  # (study, variant) whose runs these are
    init_from: StartFrom | None = None
    equal_time: EqualTime | None = None


@dataclass(frozen=True)
class Comparison:
    """An effect a study reports: mean(``b``) - mean(``a``) of the final ``metric`` over seeds, beside the
    paper's reported delta of the same comparison (``paper_delta``, in the metric's reported unit: points for AP;
    None: not reported) and the paper's value of ``a`` it is over (``paper_base``; None: not given)."""

    name: str
    a: str
    b: str
    metric: str
    label: str
    paper_table: str | None = None
    paper_delta: float | None = None
    paper_note: str | None = None
    paper_base: float | None = None


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    paper: str | None
    seeds: tuple[int, ...]
    variants: dict[str, Variant]
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: tuple[str, ...] | None = None  # the gathered table's columns (None: the six bbox APs)
    comparisons: dict[str, Comparison] = field(default_factory=dict)

    def run_path(self, runs_root: str | Path, variant: str, seed: int) -> Path:
        """The run directory of ``variant`` at ``seed``: its own, or that of the variant it reuses."""
        reuse = self.variants[variant].reuse
        return run_dir(runs_root, *(reuse or (self.name, variant)), seed)

    def start_run(self, runs_root: str | Path, variant: str, seed: int) -> Path | None:
        """The run directory ``variant`` starts from at ``seed`` (its ``init_from`` variant's, same seed), or None."""
        start = self.variants[variant].init_from
        return None if start is None else self.run_path(runs_root, start.variant, seed)

    def start_overrides(self, runs_root: str | Path, variant: str, seed: int) -> list[str]:
        """The dotted overrides that start ``variant``'s run at ``seed`` from its ``init_from`` run (none without)."""
        start = self.variants[variant].init_from
        if start is None:
            return []
        spec = {"model.init_from.run": str(self.start_run(runs_root, variant, seed))}
        if start.parts is not None:
            spec["model.init_from.parts"] = list(start.parts)
        return override_args(spec)

    def eval_jobs(self, variant: str, num_groups: int) -> list[EvalJob]:
        """The jobs that produce the extra evaluations of ``variant`` (K = ``num_groups``): one per evaluation,
        a per-group evaluation included (its groups in one job)."""
        files = self.evaluations_for(variant, num_groups)  # checks the groups exist
        jobs = []
        for name, spec in self.evaluations.items():
            if variant not in spec.get("variants", []):
                continue
            overrides = tuple(override_args(spec.get("overrides") or {}))
            groups = tuple(ev.group for ev in files if ev.job == name and ev.group is not None)
            jobs.append(EvalJob(name=name, groups=groups or None, overrides=overrides))
        return jobs

    def evaluations_for(self, variant: str, num_groups: int) -> list[Evaluation]:
        """The extra evaluations of ``variant`` (whose model has ``num_groups`` groups), in order."""
        out: list[Evaluation] = []
        for name, spec in self.evaluations.items():
            if variant not in spec.get("variants", []):
                continue
            overrides = tuple(override_args(spec.get("overrides") or {}))
            groups = spec.get("groups")
            if groups is None:
                out.append(Evaluation(name=name, overrides=overrides, job=name))
                continue
            if groups == "all":
                groups = list(range(num_groups))
            for g in groups:
                if not 0 <= int(g) < num_groups:
                    raise StudyError(f"study {self.name}: evaluations.{name}: group {g} does not exist "
                                     f"in variant {variant} (K={num_groups})")
                out.append(Evaluation(name=f"group{int(g)}", group=int(g), overrides=overrides, job=name))
        return out


def _expect(cond: bool, msg: str) -> None:
    if not cond:
        raise StudyError(msg)


_DIGITS = re.compile(r"^\s*[0-9]+\s*$")


def parse_seeds(seeds: Any, where: str) -> list[int]:
    """Seeds as a list of distinct integers >= 0, from a study file or the workflow's ``--config seeds=...``.

    Integers, or strings of digits: Snakemake reads ``--config seeds=[0]`` with YAML's base loader, which
    gives every scalar as a string (``['0']``); one seed may be given alone (``seeds=0``). Anything else
    (a negative or fractional number, a boolean, a word, an empty list, a seed twice) is a StudyError with
    one line starting with ``where``."""
    items = seeds if isinstance(seeds, list) else [seeds]
    ok = bool(items) and all((isinstance(s, int) and not isinstance(s, bool) and s >= 0)
                             or (isinstance(s, str) and _DIGITS.match(s)) for s in items)
    _expect(ok, f"{where}: seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    out = [int(s) for s in items]
    _expect(len(set(out)) == len(out), f"{where}: seeds repeat: {out}")
    return out


def _check_metric(metric: Any, where: str) -> str:
    _expect(isinstance(metric, str) and bool(_METRIC.match(metric)),
            f"{where}: metric {metric!r} must read <family>/<stat>, e.g. bbox/AP, segm/AP, 3d/NDS")
    family = metric.split("/", 1)[0]
    _expect(family in METRIC_FAMILIES,
            f"{where}: metric {metric!r} has unknown family {family!r} (known: {', '.join(METRIC_FAMILIES)})")
    return metric


def _parse_comparisons(where: str, spec: Any, variants: dict[str, Variant]) -> dict[str, Comparison]:
    _expect(isinstance(spec, dict), f"{where}: comparisons must be a mapping of names to {{a, b, metric}}")
    out = {}
    for cname, cspec in spec.items():
        at = f"{where}: comparisons.{cname}"
        _expect(isinstance(cname, str) and bool(_NAME.match(cname)),
                f"{at}: name must be letters, digits, '_', '.', '+' or '-'")
        _expect(isinstance(cspec, dict), f"{at}: must be a mapping with a, b, metric")
        known = {"label", "a", "b", "metric", "paper"}
        for key in cspec:
            _expect(key in known, f"{at}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        missing = [k for k in ("a", "b", "metric") if k not in cspec]
        _expect(not missing, f"{at}: missing {', '.join(missing)}")
        for side in ("a", "b"):
            _expect(isinstance(cspec[side], str) and cspec[side] in variants,
                    f"{at}.{side}: unknown variant {cspec[side]!r}")
        _expect(cspec["a"] != cspec["b"], f"{at}: a and b are the same variant {cspec['a']!r}")
        metric = _check_metric(cspec["metric"], at)
        paper = cspec.get("paper")
        table = delta = note = base = None
        if paper is not None:
            _expect(isinstance(paper, dict) and "table" in paper and set(paper) <= {"table", "delta", "base", "note"},
                    f"{at}.paper: keys are table (required), delta, base, note")
            table, delta, note, base = str(paper["table"]), paper.get("delta"), paper.get("note"), paper.get("base")
            _expect(delta is None or _is_number(delta), f"{at}.paper.delta must be a number (the paper's points, e.g. 1.5)")
            _expect(base is None or (_is_number(base) and base > 0),
                    f"{at}.paper.base must be a positive number (the paper's value of a, e.g. 32.6)")
            delta = None if delta is None else float(delta)
            base = None if base is None else float(base)
            note = None if note is None else str(note)
        out[cname] = Comparison(name=cname, a=cspec["a"], b=cspec["b"], metric=metric,
                                label=str(cspec.get("label", f"{cspec['b']} - {cspec['a']}")),
                                paper_table=table, paper_delta=delta, paper_note=note, paper_base=base)
    return out


#: the keys of an explicit variant
_VARIANT_KEYS = {"label", "paper_row", "overrides", "reuse", "init_from", "equal_time"}


def _start_from(where: str, vspec: dict) -> StartFrom | None:
    """A variant's ``init_from: {variant: <name>, parts: [...]}`` (parts optional: the whole model)."""
    spec = vspec.get("init_from")
    if spec is None:
        return None
    _expect(isinstance(spec, dict) and "variant" in spec and set(spec) <= {"variant", "parts"},
            f"{where}: init_from: keys are variant (required: the variant of this study whose run of the same seed "
            f"it starts from) and parts")
    parts = spec.get("parts")
    _expect(parts is None or (isinstance(parts, list) and parts and all(isinstance(p, str) for p in parts)),
            f"{where}: init_from.parts must be a non-empty list of part names, e.g. [backbone, input_proj, encoder]")
    return StartFrom(variant=str(spec["variant"]), parts=None if parts is None else tuple(parts))


def _equal_time(where: str, vspec: dict) -> EqualTime | None:
    """A variant's ``equal_time: {to: <variant>, measured_on: <variant>}``."""
    spec = vspec.get("equal_time")
    if spec is None:
        return None
    _expect(isinstance(spec, dict) and set(spec) == {"to", "measured_on"},
            f"{where}: equal_time: keys are to (the variant whose training time to match) and measured_on (the "
            f"variant whose seconds per epoch this one has: its config on the preset's schedule)")
    return EqualTime(to=str(spec["to"]), measured_on=str(spec["measured_on"]))


def _check_starts(where: str, variants: dict[str, Variant]) -> None:
    """``init_from`` and ``equal_time`` name other variants of the study; starts form no loop, and a schedule is
    derived from variants whose own schedules are fixed."""
    for v in variants.values():
        if v.init_from is not None:
            _expect(v.init_from.variant in variants,
                    f"{where}: variant {v.name}: init_from.variant: unknown variant {v.init_from.variant!r}")
            seen, current = [v.name], v.init_from.variant
            while current is not None:
                _expect(current not in seen, f"{where}: variant {v.name}: init_from loops through "
                                             f"{' -> '.join([*seen, current])}")
                seen.append(current)
                start = variants[current].init_from
                current = None if start is None else start.variant
        if v.equal_time is not None:
            for key in ("to", "measured_on"):
                other = getattr(v.equal_time, key)
                _expect(other in variants and other != v.name,
                        f"{where}: variant {v.name}: equal_time.{key}: {other!r} is not another variant of the study")
                _expect(variants[other].equal_time is None,
                        f"{where}: variant {v.name}: equal_time.{key}: {other} has a derived schedule itself; "
                        f"name a variant trained on the preset's schedule")


def _parse_study(name: str, spec: Any) -> Study:
    where = f"study {name}"
    _expect(bool(_NAME.match(name)), f"{where}: name must be letters, digits, '_', '.', '+' or '-'")
    _expect(isinstance(spec, dict), f"{where}: must be a mapping")
    known = {"description", "paper", "seeds", "overrides", "sweep", "variants", "evaluations", "figures", "metrics",
             "comparisons"}
    for key in spec:
        _expect(key in known, f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
    seeds = spec.get("seeds", [0])
    _expect(isinstance(seeds, list), f"{where}: seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    seeds = parse_seeds(seeds, where)
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
        _expect(isinstance(vspec, dict) and set(vspec) <= _VARIANT_KEYS,
                f"{where}: variant {vname}: keys are {', '.join(sorted(_VARIANT_KEYS))}")
        _expect(vname not in variants, f"{where}: variant {vname} defined twice")
        reuse = vspec.get("reuse")
        if reuse is not None:
            parts = reuse.split("/") if isinstance(reuse, str) else []
            _expect(len(parts) == 2 and all(_NAME.match(p) for p in parts),
                    f"{where}: variant {vname}: reuse must read <study>/<variant>, e.g. ablation_K/K1")
            _expect(parts[0] != name, f"{where}: variant {vname}: reuse names its own study")
            reuse = (parts[0], parts[1])
        overrides = {**common, **(vspec.get("overrides") or {})}
        start, equal = _start_from(f"{where}: variant {vname}", vspec), _equal_time(f"{where}: variant {vname}", vspec)
        _expect(reuse is None or (start is None and equal is None),
                f"{where}: variant {vname}: reuses the runs of {'/'.join(reuse or ())}, so it cannot also say how they "
                f"start (init_from) or how long they train (equal_time): that study's variant does")
        variants[vname] = Variant(vname, tuple(override_args(overrides)), label=str(vspec.get("label", vname)),
                                  paper_row=vspec.get("paper_row"), reuse=reuse, init_from=start, equal_time=equal)
    _expect(bool(variants), f"{where}: no variants (give sweep or variants)")
    _check_starts(where, variants)
    for vname in variants:
        _expect(bool(_NAME.match(vname)), f"{where}: variant name {vname!r} must be letters, digits, '_', '.', '+' or '-'")

    evaluations = spec.get("evaluations") or {}
    _expect(isinstance(evaluations, dict), f"{where}: evaluations must be a mapping")
    for ename, espec in evaluations.items():
        _expect(isinstance(espec, dict) and set(espec) <= {"variants", "groups", "overrides"} and "variants" in espec,
                f"{where}: evaluations.{ename}: keys are variants (required), groups, overrides")
        for v in espec["variants"]:
            _expect(v in variants, f"{where}: evaluations.{ename}: unknown variant {v!r}")
            _expect(variants[v].reuse is None,
                    f"{where}: evaluations.{ename}: variant {v} reuses the runs of {'/'.join(variants[v].reuse or ())}; "
                    f"declare its evaluations in that study")
        groups = espec.get("groups")
        _expect(groups is None or groups == "all" or (isinstance(groups, list) and all(isinstance(g, int) for g in groups)),
                f"{where}: evaluations.{ename}.groups must be 'all' or a list of group indices")
        _expect(bool(re.match(r"^[A-Za-z0-9_]+$", str(ename))) and not re.match(r"^group\d+$", str(ename)),
                f"{where}: evaluations.{ename}: name must be a plain word other than group<g>")

    metrics = spec.get("metrics")
    if metrics is not None:
        _expect(isinstance(metrics, list) and bool(metrics),
                f"{where}: metrics must be a non-empty list, e.g. [bbox/AP]")
        for m in metrics:
            _check_metric(m, f"{where}: metrics")
        _expect(len(set(metrics)) == len(metrics), f"{where}: metrics repeat")
        metrics = tuple(metrics)
    comparisons = _parse_comparisons(where, spec.get("comparisons") or {}, variants)

    figures = spec.get("figures") or {}
    _expect(isinstance(figures, dict), f"{where}: figures must be a mapping")
    for fname, fspec in figures.items():
        _expect(fname in FIGURES, f"{where}: unknown figure {fname!r} (known: {', '.join(FIGURES)})")
        fspec = fspec or {}
        keys = _CHECKPOINT_FIGURE_KEYS.get(fname, _FIGURE_KEYS | ({"paper"} if fname in _FIGURE_PAPER_KEYS else set()))
        _expect(isinstance(fspec, dict) and set(fspec) <= keys, f"{where}: figures.{fname}: keys are {', '.join(sorted(keys))}")
        if fname in _CHECKPOINT_FIGURE_KEYS:
            _check_checkpoint_figure(fspec, f"{where}: figures.{fname}", seeds)
        if "paper" in fspec:
            _check_figure_paper(fspec["paper"], _FIGURE_PAPER_KEYS[fname], f"{where}: figures.{fname}.paper")
        figures[fname] = fspec
        variants_drawn = fspec.get("variants", [])
        _expect(isinstance(variants_drawn, list), f"{where}: figures.{fname}.variants must be a list")
        for v in list(variants_drawn) + ([fspec["variant"]] if "variant" in fspec else []):
            _expect(v in variants, f"{where}: figures.{fname}: unknown variant {v!r}")
        if "metric" in fspec:
            _check_metric(fspec["metric"], f"{where}: figures.{fname}")
    _expect("comparisons" not in figures or bool(comparisons),
            f"{where}: figures.comparisons needs a comparisons entry in the study")

    return Study(name=name, description=str(spec.get("description", "")), paper=spec.get("paper"),
                 seeds=tuple(seeds), variants=variants, evaluations=evaluations, figures=figures,
                 metrics=metrics, comparisons=comparisons)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_figure_paper(spec: Any, keys: set[str], where: str) -> None:
    """A figure's ``paper:`` entry: all of ``keys``, ``table`` a name, the others numbers (one line otherwise)."""
    _expect(isinstance(spec, dict) and set(spec) == keys, f"{where}: keys are {', '.join(sorted(keys))}")
    _expect(isinstance(spec["table"], str), f"{where}.table must name the paper's artefact, e.g. Fig4")
    for k in sorted(keys - {"table"}):
        _expect(_is_number(spec[k]), f"{where}.{k} must be a number (the paper's, in the metric's unit)")


def _check_checkpoint_figure(spec: dict, where: str, seeds: list[int]) -> None:
    """A figure drawn from one run's checkpoint names that run and the images it draws (one line otherwise)."""
    _expect("variant" in spec, f"{where}: needs a variant (the run whose checkpoint is drawn)")
    seed = spec.get("seed", seeds[0] if seeds else 0)
    _expect(isinstance(seed, int) and not isinstance(seed, bool) and seed in seeds,
            f"{where}: seed must be one of the study's seeds {seeds}, got {seed!r}")
    images = spec.get("images", [])
    _expect(isinstance(images, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in images),
            f"{where}: images must be a list of val image ids")
    over = spec.get("agreement_images")
    _expect(over is None or over == "all" or (isinstance(over, int) and not isinstance(over, bool) and over >= 1),
            f"{where}: agreement_images must be a count >= 1 or 'all', got {over!r}")


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
    for study in studies.values():
        for v in study.variants.values():
            if v.reuse is None:
                continue
            where = f"study {study.name}, variant {v.name}: reuse {'/'.join(v.reuse)}"
            _expect(v.reuse[0] in studies, f"{where}: no such study")
            target = studies[v.reuse[0]].variants.get(v.reuse[1])
            _expect(target is not None, f"{where}: study {v.reuse[0]} has no such variant")
            _expect(target.reuse is None, f"{where}: that variant reuses {'/'.join(target.reuse or ())} itself; "
                                          f"name the study that owns the runs")
    if recipe is not None:
        resolved = {}
        for study in studies.values():
            for v in study.variants.values():
                overrides = list(v.overrides) + study.start_overrides(_RESOLVE_RUNS, v.name, 0)
                try:
                    resolved[study.name, v.name] = load_config(recipe, list(preset_overrides or []) + overrides)
                except ConfigError as e:
                    raise StudyError(f"study {study.name}, variant {v.name}: {e}") from None
        for study in studies.values():
            for v in study.variants.values():
                if v.reuse is not None:
                    check_reuse(study.name, v.name, v.reuse, resolved[study.name, v.name], resolved[v.reuse])
    return studies


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{dotted key: leaf value}``."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def check_reuse(study: str, variant: str, reuse: tuple[str, str], config: Any, reused_config: Any) -> None:
    """Refuse a reuse whose two resolved configs (:class:`~groupdetr.config.Config`) differ: one line naming
    the study, the variant and the first dotted key whose values differ."""
    from groupdetr.config import to_dict

    mine, theirs = _flat(to_dict(config)), _flat(to_dict(reused_config))
    for key in sorted(set(mine) | set(theirs)):
        if mine.get(key) != theirs.get(key):
            raise StudyError(f"study {study}, variant {variant}: reuse {'/'.join(reuse)}: the configs differ at "
                             f"{key} ({mine.get(key)!r} here, {theirs.get(key)!r} there); a reused run must be the "
                             f"same experiment")
