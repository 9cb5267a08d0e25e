rule dataset:
    """The base dataset with this experiment's transforms (e.g. a rotation) applied."""
    input:
        user_data_file(),
    output:
        f"{RESULTS}/{{exp}}/dataset.npz",
    log:
        f"{LOGS}/{{exp}}/dataset.log",
    benchmark:
        f"{LOGS}/{{exp}}/dataset.benchmark.tsv"
    localrule: True
    conda:
        "../../envs/lossatlas.yaml"
    params:
        settings=step_settings("dataset"),
        experiment=experiment_params,
    script:
        "../scripts/step.py"
