# Settings, studies and the helper functions every rule uses. Study semantics live in the library
# (groupdetr.studies, tested); this file only maps them onto paths and commands.
#
# Software: every rule runs the project's own package with the interpreter that runs Snakemake (the
# uv-locked .venv of the README's set-up; on a cluster the same path on a shared file system). Rules also
# name workflows/envs/groupdetr.yaml, the same locked requirements as a conda environment, which is used
# only with `--software-deployment-method conda`; shell commands then call the environment's `python`
# instead of the .venv's (see python() below).
import hashlib
import json
import shlex
import sys
from functools import cache
from pathlib import Path

from snakemake.utils import validate

from groupdetr.config import PRETRAIN_WEIGHTS, ConfigError, load_config, to_dict
from groupdetr.pretrain.cache import pretrain_spec
from groupdetr.rundir import METRICS, eval_file, run_dir
from groupdetr.studies import SCHEDULE, StudyError, check_reuse, load_studies, parse_seeds, schedule_file

REPO = Path(workflow.current_basedir).parent.parent


validate(config, schema="../schemas/config.schema.yaml")


def fail(message):
    """Stop the workflow with one line naming the problem (no traceback)."""
    sys.stderr.write(f"groupdetr workflow: {message}\n")
    sys.exit(2)


def settings_seeds(seeds):
    """config['seeds'] as integers (None: each study's own): `--config seeds=[0]` arrives as ['0']."""
    if seeds is None:
        return None
    try:
        return parse_seeds(seeds, "config seeds")
    except StudyError as e:
        fail(str(e))


config["seeds"] = settings_seeds(config["seeds"])


def preset():
    """The active preset entry of config['presets'] (the one switch between CPU and paper runs)."""
    name = config["preset"]
    if name not in config["presets"]:
        fail(f"preset {name!r} is not defined (known: {', '.join(config['presets'])})")
    return config["presets"][name]


@cache
def uses_coco():
    """Whether the preset's recipe reads COCO (then config['coco_root'] is required)."""
    return load_config(preset()["recipe"], preset()["overrides"]).data.dataset == "coco"


@cache
def data_overrides():
    """Where the preset's dataset lives: the COCO root, or a rendered benchmark keyed by its settings
    (a change of benchmark settings renders a new folder and never touches a finished one)."""
    if uses_coco():
        if not config["coco_root"]:
            fail(f"preset {config['preset']!r} trains on COCO: pass --config coco_root=/path/to/coco")
        return [f"data.root={config['coco_root']}"]
    data = to_dict(load_config(preset()["recipe"], preset()["overrides"] + config["overrides"]).data)
    # only what the rendered images depend on (data.augmentation and the split paths do not), so a new data.*
    # key never moves a rendered benchmark (these three were all of data.* but root and num_workers)
    data = {k: data[k] for k in ("dataset", "image_size", "synth")}
    key = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
    return [f"data.root={config['data_root']}/{data['dataset']}-{data['image_size']}px-{key}"]


def base_overrides():
    """Overrides of every run: the preset's, then the dataset location, then config['overrides']."""
    return list(preset()["overrides"]) + data_overrides() + list(config["overrides"])


def load_study_file():
    """The studies file, checked for its format; the overrides of every run are checked against the preset's
    recipe here too. A variant's own overrides are resolved when a target needs it (run_config): a study the
    preset cannot run (3D boxes on COCO) stops only the targets that include it."""
    path = Path(config["studies"])
    path = path if path.is_absolute() else REPO / path
    try:
        load_config(preset()["recipe"], base_overrides())
        return load_studies(path)
    except (StudyError, ConfigError) as e:
        fail(str(e))


STUDIES = load_study_file()


def study_seeds(study):
    """The seeds to run for a study (config['seeds'] replaces the study's own)."""
    return list(config["seeds"] or STUDIES[study].seeds)


def study_variants(study):
    """The variants to run for a study (config['variants'][study] selects a subset)."""
    chosen = config["variants"].get(study)
    if chosen is None:
        return list(STUDIES[study].variants)
    unknown = [v for v in chosen if v not in STUDIES[study].variants]
    if unknown:
        fail(f"config variants.{study}: unknown variant(s) {', '.join(unknown)}")
    return list(chosen)


for _study in config["variants"]:
    if _study not in STUDIES:
        fail(f"config variants: unknown study {_study!r} (known: {', '.join(STUDIES)})")
for _study in config["default_studies"] or []:
    if _study not in STUDIES:
        fail(f"config default_studies: unknown study {_study!r} (known: {', '.join(STUDIES)})")


def default_studies():
    """The studies of the default target and of the notebooks' inputs (config['default_studies'], else all)."""
    return list(config["default_studies"] or STUDIES)


# The run-directory contract's paths as rule patterns (wildcards study, variant, seed, evaluation).
RUN_PATTERN = str(run_dir(config["runs"], "{study}", "{variant}", "{seed}"))
METRICS_PATTERN = f"{RUN_PATTERN}/{METRICS}"
EVAL_PATTERN = str(eval_file(RUN_PATTERN, "{evaluation}"))


def run_path(study, variant, seed):
    """A variant's run directory: its own, or that of the other study's variant it reuses."""
    return STUDIES[study].run_path(config["runs"], variant, seed)


def run_overrides(study, variant, seed):
    """The full dotted overrides of one run, after the preset's recipe: a variant that starts from another
    variant's run (init_from) names that run of the same seed (model.init_from.run)."""
    spec = STUDIES[study]
    return (base_overrides() + list(spec.variants[variant].overrides)
            + spec.start_overrides(config["runs"], variant, seed) + [f"seed={seed}"])


@cache
def run_config(study, variant):
    """A variant's resolved config under the preset; a misspelt key or a variant the preset's dataset cannot
    run fails here, before any job, with one line naming study and variant."""
    try:
        return load_config(preset()["recipe"], run_overrides(study, variant, 0))
    except ConfigError as e:
        fail(f"study {study}, variant {variant}: {e}")


def reused_config(study, variant):
    """Check that a variant reusing another study's runs resolves to that variant's config under the preset
    (one line naming the first differing key if not)."""
    reuse = STUDIES[study].variants[variant].reuse
    if reuse is not None:
        try:
            check_reuse(study, variant, reuse, run_config(study, variant), run_config(*reuse))
        except StudyError as e:
            fail(str(e))


def evaluations(study, variant):
    """The extra-evaluation jobs of a variant's runs (every group alone, in one job; another postprocess)."""
    return STUDIES[study].eval_jobs(variant, run_config(study, variant).model.num_groups)


def set_args(overrides):
    return " ".join(f"--set {shlex.quote(o)}" for o in overrides)


def python():
    """The interpreter of the jobs: Snakemake's own (the project's .venv), or the conda environment's."""
    methods = {str(getattr(m, "value", m)).lower() for m in workflow.deployment_settings.deployment_method or ()}
    return "python" if "conda" in methods else shlex.quote(sys.executable)


def groupdetr_command():
    """`python -m groupdetr` of the jobs' interpreter."""
    return f"{python()} -m groupdetr"


# pretrained backbone file name -> the overrides that define it (filled as runs ask for one)
PRETRAINED = {}


def pretrained_file(cfg, overrides):
    """The pretrained-backbone file a run of ``cfg`` (made by ``overrides`` over the preset's recipe) starts
    from, or None when the config does not ask for one (``model.backbone.weights: pretrain``). Its name is a
    hash of everything the pretraining depends on that is known before the dataset exists (dataset location,
    image size, backbone architecture, ``pretrain.*``), so the same inputs share one file and one job; the
    file is a copy of the content-addressed cache entry that ``groupdetr pretrain`` finds or builds."""
    if cfg.model.backbone.weights != PRETRAIN_WEIGHTS:
        return None
    spec = pretrain_spec(cfg)
    blob = json.dumps({"dataset": spec.dataset, "root": spec.root, "image_size": spec.image_size,
                       "backbone": spec.backbone, "settings": spec.settings}, sort_keys=True)
    name = f"{Path(spec.root).name}-{spec.backbone['name']}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"
    PRETRAINED.setdefault(name, list(overrides))
    return f"{config['data_root']}/pretrained/{name}.pth"


def pretrained_backbone(study, variant):
    """The pretrained-backbone file of a study's variant, or None (see pretrained_file)."""
    return pretrained_file(run_config(study, variant), run_overrides(study, variant, 0))


# The preset's own pretrained backbone is known at parse time, so its file is a target of its own.
pretrained_file(load_config(preset()["recipe"], base_overrides()), base_overrides())


def pretrain_input(wildcards):
    """A run's pretrained backbone as input; ancient(): the file is deterministic for its name, so a
    re-made copy (e.g. after a code change re-ran the job) never retrains finished runs."""
    path = pretrained_backbone(wildcards.study, wildcards.variant)
    return [] if path is None else [ancient(path)]


def pretrain_command(wildcards, output, threads):
    """`groupdetr pretrain` for one pretrained-backbone file (found or built in the cache, copied out)."""
    if wildcards.name not in PRETRAINED:
        fail(f"no run of the selected studies uses the pretrained backbone {wildcards.name}")
    return (f"OMP_NUM_THREADS={threads} {groupdetr_command()} pretrain -c {shlex.quote(preset()['recipe'])} "
            f"{set_args(PRETRAINED[wildcards.name])} --out {shlex.quote(str(output[0]))}")


def start_input(wildcards):
    """The finished run a variant starts from (init_from), as a dependency between runs: its metrics.json, so
    that run is trained first and once (a reused one under the study that owns it). ancient(): a re-made
    metrics.json of the same run must not retrain the runs started from it, which `groupdetr train` would find
    finished anyway (their manifests record the sha256 of the checkpoint they started from)."""
    run = STUDIES[wildcards.study].start_run(config["runs"], wildcards.variant, int(wildcards.seed))
    return [] if run is None else [ancient(str(run / METRICS))]


def variant_schedule(study, variant):
    """The derived schedule file of a variant with equal_time (shared by its seeds), or None."""
    if STUDIES[study].variants[variant].equal_time is None:
        return None
    return str(schedule_file(config["runs"], study, variant))


def schedule_input(wildcards):
    """A run's derived schedule (equal_time) as input: written once its reference runs are finished."""
    path = variant_schedule(wildcards.study, wildcards.variant)
    return [] if path is None else [path]


def equal_time_runs(study, variant):
    """(runs to match, runs measured) of a variant with equal_time, over the study's selected seeds."""
    spec = STUDIES[study].variants[variant].equal_time
    if spec is None:
        fail(f"study {study}: variant {variant} has no equal_time")
    seeds = study_seeds(study)
    return ([run_path(study, spec.to, s) for s in seeds], [run_path(study, spec.measured_on, s) for s in seeds])


def equal_time_inputs(wildcards):
    to, measured = equal_time_runs(wildcards.study, wildcards.variant)
    return [str(r / METRICS) for r in to + measured]


def equal_time_command(wildcards, output):
    """`groupdetr equal-time`: the epochs of equal training time from the finished runs' logged seconds."""
    to, measured = equal_time_runs(wildcards.study, wildcards.variant)
    runs = lambda rs: " ".join(shlex.quote(str(r)) for r in rs)
    return (f"{groupdetr_command()} equal-time --to {runs(to)} --measured-on {runs(measured)} "
            f"--out {shlex.quote(str(output[0]))}")


def train_command(wildcards, threads):
    """One training run; through torchrun when the preset asks for more than one GPU."""
    run_config(wildcards.study, wildcards.variant)  # resolvable under this preset (one line if not)
    gpus = preset()["gpus"]
    launcher = (f"{python()} -m torch.distributed.run --standalone --nproc-per-node {gpus} -m groupdetr"
                if gpus > 1 else groupdetr_command())
    run = run_path(wildcards.study, wildcards.variant, int(wildcards.seed))
    overrides = run_overrides(wildcards.study, wildcards.variant, int(wildcards.seed))
    weights = pretrained_backbone(wildcards.study, wildcards.variant)
    overrides += [f"model.backbone.weights={weights}"] if weights is not None else []
    schedule = variant_schedule(wildcards.study, wildcards.variant)
    set_from = "" if schedule is None else f"--set-from {shlex.quote(schedule)} "
    return (f"OMP_NUM_THREADS={threads} {launcher} train -c {shlex.quote(preset()['recipe'])} {set_args(overrides)} "
            f"{set_from}--out {shlex.quote(str(run))}")


def eval_command(wildcards):
    """`groupdetr eval` of one finished run for one named extra evaluation; a per-group evaluation is one job
    (one forward per batch for all groups when self-attention keeps them apart) writing group{g}.json for
    each group and the index {evaluation}.json. Per-group jobs keep stats only (--no-detections: 11 groups' boxes
    would be several times the checkpoint; `groupdetr eval RUN --group g` writes any group's); other evaluations
    (e.g. NMS) write their detections beside their stats."""
    (job,) = [j for j in evaluations(wildcards.study, wildcards.variant) if j.name == wildcards.evaluation] or [None]
    if job is None:
        fail(f"study {wildcards.study}: no evaluation {wildcards.evaluation!r} for variant {wildcards.variant}")
    run = run_path(wildcards.study, wildcards.variant, int(wildcards.seed))
    groups = "" if job.groups is None else " --groups " + " ".join(map(str, job.groups)) + " --no-detections"
    out = eval_file(run, job.name)
    return f"{groupdetr_command()} eval {shlex.quote(str(run))}{groups} {set_args(job.overrides)} --out {shlex.quote(str(out))}"


def dataset_input(wildcards):
    """The rendered benchmark a run needs (nothing for COCO: the engine checks the root itself)."""
    if uses_coco():
        return []
    return [ancient(data_overrides()[0].split("=", 1)[1] + ".synth.json")]


def study_runs(study):
    """Every (variant, seed) of a study as selected by the config."""
    return [(v, s) for v in study_variants(study) for s in study_seeds(study)]


def gather_inputs(wildcards):
    """What a study's tables need: every run's metrics.json and every extra evaluation."""
    files = []
    for variant in study_variants(wildcards.study):
        reused_config(wildcards.study, variant)
    for variant, seed in study_runs(wildcards.study):
        run = run_path(wildcards.study, variant, seed)
        files.append(str(run / METRICS))
        files += [str(eval_file(run, e.name)) for e in evaluations(wildcards.study, variant)]
    return files


def gather_args(wildcards):
    return (f"--seeds {' '.join(map(str, study_seeds(wildcards.study)))} "
            f"--variants {' '.join(study_variants(wildcards.study))}")


NOTEBOOKS = sorted(p.stem for p in (REPO / "notebooks").glob("*.ipynb"))
for _notebook in config["notebooks"] or []:
    if _notebook not in NOTEBOOKS:
        fail(f"config notebooks: unknown notebook {_notebook!r} (known: {', '.join(NOTEBOOKS)})")


def all_targets():
    """Every (default) study's gathered folder plus the executed notebooks (config['notebooks'], else all), each
    also as HTML."""
    notebooks = config["notebooks"] or NOTEBOOKS
    return ([f"{config['out']}/{s}" for s in default_studies()]
            + [f"{config['out']}/notebooks/{n}.{ext}" for n in notebooks for ext in ("ipynb", "html")])


wildcard_constraints:
    study="|".join(STUDIES),
    variant=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",
    seed=r"\d+",
    evaluation=r"[A-Za-z0-9_]+",
    notebook="|".join(NOTEBOOKS) or "no-notebooks",
