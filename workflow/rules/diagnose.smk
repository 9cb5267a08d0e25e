rule diagnose:
    """Convergence of U and every parameter (R-hat, ESS, MCSE) and the chain-means check."""
    input:
        samples=f"{RESULTS}/{{exp}}/samples.h5",
    output:
        summary=report(
            f"{RESULTS}/{{exp}}/diagnostics/summary.csv",
            caption="../report/summary.rst",
            category="Convergence",
            subcategory="{exp}",
            labels={"experiment": "{exp}", "item": "summary table"},
        ),
        normality=report(
            f"{RESULTS}/{{exp}}/diagnostics/normality.csv",
            caption="../report/normality.rst",
            category="Convergence",
            subcategory="{exp}",
            labels={"experiment": "{exp}", "item": "chain-means Gaussianity"},
        ),
        convergence=report(
            f"{RESULTS}/{{exp}}/diagnostics/convergence.json",
            caption="../report/convergence.rst",
            category="Convergence",
            subcategory="{exp}",
            labels={"experiment": "{exp}", "item": "convergence checks"},
        ),
        trace=report(
            f"{RESULTS}/{{exp}}/diagnostics/trace_U.png",
            caption="../report/trace.rst",
            category="Convergence",
            subcategory="{exp}",
            labels={"experiment": "{exp}", "item": "trace of U"},
        ),
        rank=report(
            f"{RESULTS}/{{exp}}/diagnostics/rank_U.png",
            caption="../report/rank.rst",
            category="Convergence",
            subcategory="{exp}",
            labels={"experiment": "{exp}", "item": "rank plot of U"},
        ),
        rhat=report(
            f"{RESULTS}/{{exp}}/diagnostics/rhat.png",
            caption="../report/rhat.rst",
            category="Convergence",
            subcategory="{exp}",
            labels={"experiment": "{exp}", "item": "R-hat per parameter"},
        ),
    log:
        "logs/{exp}/diagnose.log",
    conda:
        "../../envs/lossatlas.yaml"
    resources:
        mem_mb=2048,
        runtime=60,
    params:
        diagnose=section("diagnose"),
        dpi=CFG["figures"]["dpi"],
    script:
        "../scripts/diagnose.py"
