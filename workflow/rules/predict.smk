rule predict:
    """The draws on test points the chains never saw: the good draws' posterior-predictive
    accuracy and loss (their averaged predictions), each draw's alone, pooled and by chain.
    """
    input:
        samples=f"{RESULTS}/{{exp}}/samples.h5",
        dataset=f"{RESULTS}/{{exp}}/dataset.npz",
    output:
        table=report(
            f"{RESULTS}/{{exp}}/landscape/predict.csv",
            caption="../report/predict.rst",
            category="{exp}",
            subcategory="9 predictions",
            labels={"experiment": "{exp}", "item": "posterior-predictive table"},
        ),
        finding=f"{RESULTS}/{{exp}}/landscape/predict.json",
        figure=report(
            f"{RESULTS}/{{exp}}/landscape/predict.png",
            caption="../report/predict.rst",
            category="{exp}",
            subcategory="9 predictions",
            labels={"experiment": "{exp}", "item": "test score against training loss"},
        ),
    log:
        f"{LOGS}/{{exp}}/predict.log",
    benchmark:
        f"{LOGS}/{{exp}}/predict.benchmark.tsv"
    conda:
        "../../envs/lossatlas.yaml"
    resources:
        # MNIST-1D's conv net on its 1,000 test sequences peaked at 1.1 GB (JAX's buffers)
        mem_mb=2048,
        runtime=30,
    params:
        settings=step_settings("predict"),
        experiment=experiment_params,
    script:
        "../scripts/step.py"
