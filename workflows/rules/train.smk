# Training runs (the engine's run-directory contract; a rerun resumes, a finished run is kept) and the
# extra evaluations of finished runs.


rule train:
    input:
        dataset_input,
        pretrain_input,
        start_input,
        schedule_input,
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


# Equal training time (paper Table 2; a variant's `equal_time:` in studies.yaml). How long the longer baseline
# trains is known only once the model it is matched to has trained, so it cannot be a parse-time override. The
# simplest robust design: one small job per such variant reads the finished reference runs' logged seconds and
# writes the derived overrides to {runs}/{study}/{variant}/schedule.yaml; the variant's train jobs take that
# file as input and pass it on (`groupdetr train --set-from`). The DAG is complete before anything runs (a dry
# run shows every job, no checkpoint rule), and the derivation is a tested library function
# (groupdetr.equal_time), deterministic in the runs' logs: all seeds of the variant share one schedule.


localrules:
    equal_time,


rule equal_time:
    input:
        equal_time_inputs,
    output:
        f"{config['runs']}/{{study}}/{{variant}}/{SCHEDULE}",
    log:
        f"{config['logs']}/equal_time/{{study}}/{{variant}}.log",
    benchmark:
        f"{config['logs']}/benchmarks/equal_time/{{study}}/{{variant}}.tsv"
    params:
        command=equal_time_command,
    conda:
        "../envs/groupdetr.yaml"
    shell:
        "{params.command} > {log} 2>&1"
