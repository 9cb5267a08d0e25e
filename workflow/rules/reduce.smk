rule reduce:
    """Kernel PCA of all draws, then linear PCA of the good ones (mean loss below threshold)."""
    input:
        samples=f"{RESULTS}/{{exp}}/samples.h5",
        dataset=f"{RESULTS}/{{exp}}/dataset.npz",
    output:
        reduction=f"{RESULTS}/{{exp}}/reduce/reduction.h5",
        summary=report(
            f"{RESULTS}/{{exp}}/reduce/summary.json",
            caption="../report/reduce.rst",
            category="{exp}",
            subcategory="4 reductions",
            labels={"experiment": "{exp}", "item": "reduction summary"},
        ),
        kpca_3d=report(
            f"{RESULTS}/{{exp}}/reduce/kpca_3d.png",
            caption="../report/kpca_3d.rst",
            category="{exp}",
            subcategory="4 reductions",
            labels={"experiment": "{exp}", "item": "kernel PCA, 3-D"},
        ),
        # here, not in diagnose: it marks the good cut, and a new threshold must not redo the
        # convergence diagnostics
        energy_hist=report(
            f"{RESULTS}/{{exp}}/diagnostics/energy_hist.png",
            caption="../report/energy_hist.rst",
            category="{exp}",
            subcategory="3 energy",
            labels={"experiment": "{exp}", "item": "energy histogram"},
        ),
    log:
        f"{LOGS}/{{exp}}/reduce.log",
    benchmark:
        f"{LOGS}/{{exp}}/reduce.benchmark.tsv"
    conda:
        "../../envs/lossatlas.yaml"
    resources:
        mem_mb=4096,
        runtime=60,
    params:
        settings=step_settings("reduce"),
    script:
        "../scripts/step.py"
