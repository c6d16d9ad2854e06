# The embedded benchmark of the cpu preset, rendered once per settings (COCO is read in place).


rule synth:
    output:
        f"{config['data_root']}/{{name}}/synth.json",
    log:
        f"{config['logs']}/synth/{{name}}.log",
    benchmark:
        f"{config['logs']}/benchmarks/synth/{{name}}.tsv"
    params:
        command=lambda wildcards, threads: (
            f"{groupdetr_command()} synth -c {shlex.quote(preset()['recipe'])} {set_args(base_overrides())} "
            f"--out {config['data_root']}/{wildcards.name} --workers {threads}"
        ),
    threads: 2  # rendering processes (Snakemake caps this at --cores)
    conda:
        "../envs/groupdetr.yaml"
    shell:
        "{params.command} > {log} 2>&1"
