rule reduce:
    """Kernel PCA of all draws, then linear PCA of the good ones (mean loss below threshold)."""
    input:
        samples=f"{RESULTS}/{{exp}}/samples.h5",
    output:
        reduction=f"{RESULTS}/{{exp}}/reduce/reduction.h5",
        summary=report(
            f"{RESULTS}/{{exp}}/reduce/summary.json",
            caption="../report/reduce.rst",
            category="Reduction",
            subcategory="{exp}",
            labels={"experiment": "{exp}", "item": "reduction summary"},
        ),
    log:
        "logs/{exp}/reduce.log",
    conda:
        "../../envs/lossatlas.yaml"
    resources:
        mem_mb=4096,
        runtime=60,
    params:
        seed=CFG["seed"],
        reduce=section("reduce"),
        good_threshold=CFG["target"]["good_threshold"],
    script:
        "../scripts/reduce.py"
