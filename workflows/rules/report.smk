# Gathered tables and figures per study, and the notebooks executed headless against them (every
# notebooks/*.ipynb; a notebook whose study is not among default_studies says "not gathered yet").


localrules:
    gather,
    notebook,


rule gather:
    input:
        gather_inputs,
    output:
        report(
            directory(f"{config['out']}/{{study}}"),
            patterns=["{name}.png"],
            caption="../report/study.rst",
            category="{study}",
            labels={"study": "{study}", "figure": "{name}"},
        ),
    log:
        f"{config['logs']}/gather/{{study}}.log",
    benchmark:
        f"{config['logs']}/benchmarks/gather/{{study}}.tsv"
    params:
        command=lambda wildcards: (
            f"{groupdetr_command()} gather --studies {shlex.quote(str(REPO / config['studies']))} "
            f"--study {wildcards.study} --runs {shlex.quote(config['runs'])} {gather_args(wildcards)}"
        ),
    conda:
        "../envs/groupdetr.yaml"
    shell:
        "{params.command} --out {output} > {log} 2>&1"


rule notebook:
    input:
        notebook=str(REPO / "notebooks" / "{notebook}.ipynb"),
        studies=[f"{config['out']}/{s}" for s in default_studies()],
    output:
        notebook=f"{config['out']}/notebooks/{{notebook}}.ipynb",
        html=report(f"{config['out']}/notebooks/{{notebook}}.html", caption="../report/notebook.rst", category="notebooks",
               labels={"notebook": "{notebook}"}),
    log:
        f"{config['logs']}/notebooks/{{notebook}}.log",
    benchmark:
        f"{config['logs']}/benchmarks/notebooks/{{notebook}}.tsv"
    params:
        command=lambda wildcards: f"{groupdetr_command()} notebook --results {shlex.quote(config['out'])}",
    conda:
        "../envs/groupdetr.yaml"
    shell:
        "{params.command} {input.notebook} --out {output.notebook} > {log} 2>&1"
