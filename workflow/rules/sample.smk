rule sample:
    """Run every chain of one experiment as Dask tasks; samples.h5 is a virtual view of them.

    The batch files under chains/ are the resume state. They are deliberately not outputs:
    Snakemake deletes a job's outputs before rerunning it, which would throw the checkpoints
    away. The sampling settings are params, so changing one reruns this job, and the store
    moves aside any batch file whose settings hash no longer matches.
    """
    input:
        dataset=f"{RESULTS}/{{exp}}/dataset.npz",
    output:
        samples=f"{RESULTS}/{{exp}}/samples.h5",
    log:
        f"{LOGS}/{{exp}}/sample.log",
    benchmark:
        f"{LOGS}/{{exp}}/sample.benchmark.tsv"
    conda:
        "../../envs/lossatlas.yaml"
    # One Dask worker per thread (common.smk: sample_threads).
    threads: sample_threads()
    resources:
        mem_mb=lambda wildcards, threads: 1024 + 512 * threads,
        runtime=120,
    params:
        settings=step_settings("sample"),
        experiment=experiment_params,
    script:
        "../scripts/step.py"


rule restore:
    """Sample again the batches `lossatlas verify --repair` moved aside from under a finished
    store, and check them against it (every draw's energy as samples.h5 recorded it). No job
    that read the store depends on this one, so none is redone. In the default target only
    while chains/restore-pending.json says a repair is pending.
    """
    input:
        dataset=f"{RESULTS}/{{exp}}/dataset.npz",
        samples=f"{RESULTS}/{{exp}}/samples.h5",
    output:
        restored=f"{RESULTS}/{{exp}}/chains/restored.json",
    log:
        f"{LOGS}/{{exp}}/restore.log",
    conda:
        "../../envs/lossatlas.yaml"
    threads: sample_threads()
    resources:
        mem_mb=lambda wildcards, threads: 1024 + 512 * threads,
        runtime=120,
    params:
        settings=step_settings("restore"),
        experiment=experiment_params,
    script:
        "../scripts/step.py"
