rule diagnose:
    """Convergence of U and every parameter (R-hat, ESS, MCSE) and the chain-means check."""
    input:
        samples=f"{RESULTS}/{{exp}}/samples.h5",
        dataset=f"{RESULTS}/{{exp}}/dataset.npz",
    output:
        summary=report(
            f"{RESULTS}/{{exp}}/diagnostics/summary.csv",
            caption="../report/summary.rst",
            category="{exp}",
            subcategory="2 convergence",
            labels={"experiment": "{exp}", "item": "summary table"},
        ),
        normality=report(
            f"{RESULTS}/{{exp}}/diagnostics/normality.csv",
            caption="../report/normality.rst",
            category="{exp}",
            subcategory="2 convergence",
            labels={"experiment": "{exp}", "item": "chain-means Gaussianity"},
        ),
        convergence=report(
            f"{RESULTS}/{{exp}}/diagnostics/convergence.json",
            caption="../report/convergence.rst",
            category="{exp}",
            subcategory="2 convergence",
            labels={"experiment": "{exp}", "item": "convergence checks"},
        ),
        trace=report(
            f"{RESULTS}/{{exp}}/diagnostics/trace_U.png",
            caption="../report/trace.rst",
            category="{exp}",
            subcategory="2 convergence",
            labels={"experiment": "{exp}", "item": "trace of U"},
        ),
        rank=report(
            f"{RESULTS}/{{exp}}/diagnostics/rank_U.png",
            caption="../report/rank.rst",
            category="{exp}",
            subcategory="2 convergence",
            labels={"experiment": "{exp}", "item": "rank plot of U"},
        ),
        rhat=report(
            f"{RESULTS}/{{exp}}/diagnostics/rhat.png",
            caption="../report/rhat.rst",
            category="{exp}",
            subcategory="2 convergence",
            labels={"experiment": "{exp}", "item": "R-hat per parameter"},
        ),
        invariant=report(
            f"{RESULTS}/{{exp}}/diagnostics/invariant.csv",
            caption="../report/invariant.rst",
            category="{exp}",
            subcategory="2 convergence",
            labels={"experiment": "{exp}", "item": "canonical and invariant R-hat"},
        ),
        invariant_summary=report(
            f"{RESULTS}/{{exp}}/diagnostics/invariant.json",
            caption="../report/invariant_summary.rst",
            category="{exp}",
            subcategory="2 convergence",
            labels={"experiment": "{exp}", "item": "raw vs canonical vs invariant"},
        ),
    log:
        f"{LOGS}/{{exp}}/diagnose.log",
    benchmark:
        f"{LOGS}/{{exp}}/diagnose.benchmark.tsv"
    conda:
        "../../envs/lossatlas.yaml"
    # Parameter blocks are diagnosed on a process pool of this size (p ~ 1e5 takes ~30 min on one).
    threads: diagnose_threads()
    resources:
        mem_mb=2048,
        runtime=60,
    params:
        settings=step_settings("diagnose"),
    script:
        "../scripts/step.py"
