rule findings:
    """The report's first page: each experiment's verdicts, then the method with the settings
    the results were made with."""
    input:
        convergence=expand(
            f"{RESULTS}/{{exp}}/diagnostics/convergence.json", exp=list(EXPERIMENTS)
        ),
        reduce=expand(f"{RESULTS}/{{exp}}/reduce/summary.json", exp=list(EXPERIMENTS)),
        dimension=expand(
            f"{RESULTS}/{{exp}}/landscape/dimension.json", exp=list(EXPERIMENTS)
        ),
        census=expand(f"{RESULTS}/{{exp}}/landscape/census.json", exp=list(EXPERIMENTS)),
        compare=compare_outputs(),
        checks=theory_outputs(),
        analyses=findings_of_analyses,
        method=workflow.source_path("../report/workflow.rst"),
    output:
        page=f"{RESULTS}/findings.rst",
        html=report(
            f"{RESULTS}/findings.html",
            caption="../report/findings.rst",
            category="Findings",
            labels={"item": "every verdict, the method and its settings"},
        ),
        json=f"{RESULTS}/findings.json",
    log:
        f"{LOGS}/findings.log",
    benchmark:
        f"{LOGS}/findings.benchmark.tsv"
    conda:
        "../../envs/lossatlas.yaml"
    resources:
        mem_mb=512,
        runtime=5,
    params:
        settings=step_settings("findings"),
        names=list(EXPERIMENTS),
    script:
        "../scripts/step.py"
