# The embedded benchmark of the cpu preset, rendered once per settings (COCO is read in place).
# The output is a copy of the benchmark's manifest beside its folder, not the manifest inside it: when
# Snakemake reruns this rule (e.g. after a code change) it deletes only the copy, and `groupdetr synth`
# finds the folder's own manifest with the same settings and renders nothing. Runs take it as
# ancient() input, so a re-made copy never triggers retraining.


rule synth:
    output:
        f"{config['data_root']}/{{name}}.synth.json",
    log:
        f"{config['logs']}/synth/{{name}}.log",
    benchmark:
        f"{config['logs']}/benchmarks/synth/{{name}}.tsv"
    params:
        manifest=lambda wildcards: f"{config['data_root']}/{wildcards.name}/synth.json",
        command=lambda wildcards, threads: (
            f"{groupdetr_command()} synth -c {shlex.quote(preset()['recipe'])} {set_args(base_overrides())} "
            f"--out {config['data_root']}/{wildcards.name} --workers {threads}"
        ),
    threads: 2  # rendering processes (Snakemake caps this at --cores)
    conda:
        "../envs/groupdetr.yaml"
    shell:
        "{params.command} > {log} 2>&1 && cp {params.manifest} {output}"


# The pretrained backbone of runs whose config says model.backbone.weights: pretrain (the cpu presets): one
# job per (dataset, backbone, pretext settings), before any training run that needs it; on a cluster it is
# built once, not per job. The job finds or builds the entry of the content-addressed cache
# (pretrain.cache) and copies the weights and their record out under a name the workflow knows upfront.


rule pretrain:
    input:
        dataset_input,
    output:
        f"{config['data_root']}/pretrained/{{name}}.pth",
    log:
        f"{config['logs']}/pretrain/{{name}}.log",
    benchmark:
        f"{config['logs']}/benchmarks/pretrain/{{name}}.tsv"
    params:
        command=pretrain_command,
    threads: 2  # one process; Snakemake caps this at --cores
    resources:
        gpu=min(preset()["gpus"], 1),
        mem_mb=preset()["mem_mb"],
        runtime=preset()["runtime"],
    conda:
        "../envs/groupdetr.yaml"
    shell:
        "{params.command} > {log} 2>&1"
