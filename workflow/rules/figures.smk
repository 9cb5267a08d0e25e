rule figures:
    """The report's Figure 1 (datasets per theta) and Figure 2 (good minima per theta)."""
    input:
        datasets=expand(f"{RESULTS}/{{exp}}/dataset.npz", exp=list(EXPERIMENTS)),
        reductions=expand(
            f"{RESULTS}/{{exp}}/reduce/reduction.h5", exp=list(EXPERIMENTS)
        ),
    output:
        fig1=report(
            f"{RESULTS}/figures/fig1_datasets.png",
            caption="../report/fig1.rst",
            category="Figures",
            labels={"figure": "1", "shows": "datasets"},
        ),
        fig2=report(
            f"{RESULTS}/figures/fig2_good_minima.png",
            caption="../report/fig2.rst",
            category="Figures",
            labels={"figure": "2", "shows": "good minima"},
        ),
    log:
        f"{LOGS}/figures.log",
    benchmark:
        f"{LOGS}/figures.benchmark.tsv"
    conda:
        "../../envs/lossatlas.yaml"
    resources:
        mem_mb=2048,
        runtime=30,
    params:
        settings=step_settings("figures"),
        names=list(EXPERIMENTS),
    script:
        "../scripts/step.py"
