# Training runs (the engine's run-directory contract; a rerun resumes, a finished run is kept) and the
# extra evaluations of finished runs.


rule train:
    input:
        dataset_input,
        pretrain_input,
    output:
        METRICS_PATTERN,
    log:
        f"{config['logs']}/train/{{study}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{config['logs']}/benchmarks/train/{{study}}/{{variant}}/seed{{seed}}.tsv"
    params:
        command=train_command,
    threads: preset()["threads"]
    resources:
        gpu=preset()["gpus"],
        mem_mb=preset()["mem_mb"],
        runtime=preset()["runtime"],
    conda:
        "../envs/groupdetr.yaml"
    shell:
        "{params.command} > {log} 2>&1"


rule evaluate:
    input:
        METRICS_PATTERN,
    output:
        EVAL_PATTERN,
    log:
        f"{config['logs']}/eval/{{study}}/{{variant}}/seed{{seed}}/{{evaluation}}.log",
    benchmark:
        f"{config['logs']}/benchmarks/eval/{{study}}/{{variant}}/seed{{seed}}/{{evaluation}}.tsv"
    params:
        command=eval_command,
    threads: 1
    resources:
        gpu=min(preset()["gpus"], 1),
        mem_mb=preset()["mem_mb"],
        runtime=30,
    conda:
        "../envs/groupdetr.yaml"
    shell:
        "OMP_NUM_THREADS={threads} {params.command} > {log} 2>&1"
