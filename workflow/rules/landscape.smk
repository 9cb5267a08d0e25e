rule dataset_figure:
    """One experiment's dataset as a figure, for its section of the report."""
    input:
        dataset=f"{RESULTS}/{{exp}}/dataset.npz",
    output:
        figure=report(
            f"{RESULTS}/{{exp}}/landscape/dataset.png",
            caption="../report/dataset.rst",
            category="{exp}",
            subcategory="1 dataset",
            labels={"experiment": "{exp}", "item": "dataset"},
        ),
    log:
        f"{LOGS}/{{exp}}/dataset_figure.log",
    benchmark:
        f"{LOGS}/{{exp}}/dataset_figure.benchmark.tsv"
    localrule: True
    conda:
        "../../envs/lossatlas.yaml"
    params:
        settings=step_settings("dataset_figure"),
        experiment=experiment_params,
    script:
        "../scripts/step.py"


rule pipeline_null:
    """The report's pipeline on uniform draws in the box: its kernel PCA embeddings, once for
    every experiment with this network (they do not depend on the data)."""
    input:
        dataset=lambda wildcards: f"{RESULTS}/{experiment_of(wildcards)}/dataset.npz",
    output:
        null=f"{RESULTS}/landscape/nulls/pipeline-{{network}}.npz",
    log:
        f"{LOGS}/{{network}}/pipeline_null.log",
    benchmark:
        f"{LOGS}/{{network}}/pipeline_null.benchmark.tsv"
    conda:
        "../../envs/lossatlas.yaml"
    resources:
        mem_mb=1024,
        runtime=30,
    params:
        settings=step_settings("pipeline_null"),
    script:
        "../scripts/step.py"


rule dimension:
    """Dimension of the good draws (PCA spectrum, TwoNN, MLE, the report's pipeline) against
    uniform, shuffled-energy, Gaussian and Laplace (around the census minima) nulls of the
    same size."""
    input:
        samples=f"{RESULTS}/{{exp}}/samples.h5",
        dataset=f"{RESULTS}/{{exp}}/dataset.npz",
        census=f"{RESULTS}/{{exp}}/landscape/census.csv",
        census_points=f"{RESULTS}/{{exp}}/landscape/census_points.npz",
        pipeline_null=lambda wildcards: (
            f"{RESULTS}/landscape/nulls/pipeline-{network_name(wildcards.exp)}.npz"
        ),
    output:
        table=report(
            f"{RESULTS}/{{exp}}/landscape/dimension.csv",
            caption="../report/dimension.rst",
            category="{exp}",
            subcategory="5 dimension",
            labels={"experiment": "{exp}", "item": "dimension table with nulls"},
        ),
        json=f"{RESULTS}/{{exp}}/landscape/dimension.json",
    log:
        f"{LOGS}/{{exp}}/dimension.log",
    benchmark:
        f"{LOGS}/{{exp}}/dimension.benchmark.tsv"
    conda:
        "../../envs/lossatlas.yaml"
    resources:
        mem_mb=2048,
        runtime=30,
    params:
        settings=step_settings("dimension"),
    script:
        "../scripts/step.py"


rule census:
    """Local optimisation from clustered and random draws, merged up to symmetry, classified by
    the Hessian; the critical points against loss and on the good draws' PCA plane."""
    input:
        samples=f"{RESULTS}/{{exp}}/samples.h5",
        dataset=f"{RESULTS}/{{exp}}/dataset.npz",
        reduction=f"{RESULTS}/{{exp}}/reduce/reduction.h5",
    output:
        table=report(
            f"{RESULTS}/{{exp}}/landscape/census.csv",
            caption="../report/census.rst",
            category="{exp}",
            subcategory="6 census of minima",
            labels={"experiment": "{exp}", "item": "census table"},
        ),
        json=f"{RESULTS}/{{exp}}/landscape/census.json",
        points=f"{RESULTS}/{{exp}}/landscape/census_points.npz",
        loss_index=report(
            f"{RESULTS}/{{exp}}/landscape/census_loss_index.png",
            caption="../report/census_loss_index.rst",
            category="{exp}",
            subcategory="6 census of minima",
            labels={"experiment": "{exp}", "item": "loss against index"},
        ),
        plane=report(
            f"{RESULTS}/{{exp}}/landscape/census_plane.png",
            caption="../report/census_plane.rst",
            category="{exp}",
            subcategory="6 census of minima",
            labels={"experiment": "{exp}", "item": "census on the good draws' plane"},
        ),
    log:
        f"{LOGS}/{{exp}}/census.log",
    benchmark:
        f"{LOGS}/{{exp}}/census.benchmark.tsv"
    conda:
        "../../envs/lossatlas.yaml"
    resources:
        mem_mb=2048,
        runtime=30,
    params:
        settings=step_settings("census"),
    script:
        "../scripts/step.py"


rule connect:
    """Paths between the census minima: straight lines, Dynamic String Sampling and the
    string method along the minimum spanning tree of the path maxima, also modulo symmetry;
    the merge tree; a k-nearest-neighbour bound on the components the draws touch."""
    input:
        samples=f"{RESULTS}/{{exp}}/samples.h5",
        dataset=f"{RESULTS}/{{exp}}/dataset.npz",
        census=f"{RESULTS}/{{exp}}/landscape/census.csv",
        census_points=f"{RESULTS}/{{exp}}/landscape/census_points.npz",
    output:
        table=report(
            f"{RESULTS}/{{exp}}/landscape/connect.csv",
            caption="../report/connect.rst",
            category="{exp}",
            subcategory="7 connectivity of minima",
            labels={"experiment": "{exp}", "item": "connectivity table"},
        ),
        json=f"{RESULTS}/{{exp}}/landscape/connect.json",
        tree=report(
            f"{RESULTS}/{{exp}}/landscape/connect_tree.png",
            caption="../report/connect_tree.rst",
            category="{exp}",
            subcategory="7 connectivity of minima",
            labels={"experiment": "{exp}", "item": "merge tree"},
        ),
        profiles=report(
            f"{RESULTS}/{{exp}}/landscape/connect_profiles.png",
            caption="../report/connect_profiles.rst",
            category="{exp}",
            subcategory="7 connectivity of minima",
            labels={"experiment": "{exp}", "item": "loss along the paths"},
        ),
        length=report(
            f"{RESULTS}/{{exp}}/landscape/connect_length.png",
            caption="../report/connect_length.rst",
            category="{exp}",
            subcategory="7 connectivity of minima",
            labels={"experiment": "{exp}", "item": "path length against the level"},
        ),
    log:
        f"{LOGS}/{{exp}}/connect.log",
    benchmark:
        f"{LOGS}/{{exp}}/connect.benchmark.tsv"
    conda:
        "../../envs/lossatlas.yaml"
    resources:
        mem_mb=1024,
        runtime=30,
    params:
        settings=step_settings("connect"),
    script:
        "../scripts/step.py"


rule cells:
    """Liu's convex cells of a one-hidden-layer ReLU network with squared loss: the cells the
    draws and the census minima lie in, each cell's minimum, genuine or spurious (LP).
    """
    input:
        samples=f"{RESULTS}/{{exp}}/samples.h5",
        dataset=f"{RESULTS}/{{exp}}/dataset.npz",
        census=f"{RESULTS}/{{exp}}/landscape/census.csv",
        census_points=f"{RESULTS}/{{exp}}/landscape/census_points.npz",
    output:
        table=report(
            f"{RESULTS}/{{exp}}/landscape/cells.csv",
            caption="../report/cells.rst",
            category="{exp}",
            subcategory="8 convex cells",
            labels={"experiment": "{exp}", "item": "cells table"},
        ),
        json=f"{RESULTS}/{{exp}}/landscape/cells.json",
        figure=report(
            f"{RESULTS}/{{exp}}/landscape/cells.png",
            caption="../report/cells_figure.rst",
            category="{exp}",
            subcategory="8 convex cells",
            labels={"experiment": "{exp}", "item": "mass against cell minimum"},
        ),
    log:
        f"{LOGS}/{{exp}}/cells.log",
    benchmark:
        f"{LOGS}/{{exp}}/cells.benchmark.tsv"
    conda:
        "../../envs/lossatlas.yaml"
    resources:
        mem_mb=1024,
        runtime=30,
    params:
        settings=step_settings("cells"),
    script:
        "../scripts/step.py"


rule hessian:
    """The Hessian spectrum at each census minimum, as PyHessian reports it for a trained
    network: top eigenvalues, trace and eigenvalue density; sharpness against loss."""
    input:
        dataset=f"{RESULTS}/{{exp}}/dataset.npz",
        census=f"{RESULTS}/{{exp}}/landscape/census.csv",
        census_points=f"{RESULTS}/{{exp}}/landscape/census_points.npz",
    output:
        table=report(
            f"{RESULTS}/{{exp}}/landscape/hessian.csv",
            caption="../report/hessian.rst",
            category="{exp}",
            subcategory="6 census of minima",
            labels={"experiment": "{exp}", "item": "Hessian spectrum table"},
        ),
        finding=f"{RESULTS}/{{exp}}/landscape/hessian.json",
        figure=report(
            f"{RESULTS}/{{exp}}/landscape/hessian.png",
            caption="../report/hessian.rst",
            category="{exp}",
            subcategory="6 census of minima",
            labels={"experiment": "{exp}", "item": "Hessian spectrum figure"},
        ),
    log:
        f"{LOGS}/{{exp}}/hessian.log",
    benchmark:
        f"{LOGS}/{{exp}}/hessian.benchmark.tsv"
    conda:
        "../../envs/lossatlas.yaml"
    resources:
        mem_mb=1024,
        runtime=30,
    params:
        settings=step_settings("hessian"),
    script:
        "../scripts/step.py"


rule critical_points:
    """One network's critical points from random starts (L-BFGS-B and a saddle search):
    loss, index and held-out loss, for the band across the width sweep."""
    input:
        dataset=f"{RESULTS}/{{exp}}/dataset.npz",
    output:
        table=f"{RESULTS}/{{exp}}/landscape/critical_points.csv",
    log:
        f"{LOGS}/{{exp}}/critical_points.log",
    benchmark:
        f"{LOGS}/{{exp}}/critical_points.benchmark.tsv"
    conda:
        "../../envs/lossatlas.yaml"
    resources:
        mem_mb=1024,
        runtime=60,
    params:
        settings=step_settings("critical_points"),
        experiment=experiment_params,
    script:
        "../scripts/step.py"


rule band:
    """Choromanska's band: the minima's losses of every network of the width sweep, how the
    band narrows as the network grows, and the index against the loss."""
    input:
        tables=expand(
            f"{RESULTS}/{{exp}}/landscape/critical_points.csv", exp=list(EXPERIMENTS)
        ),
    output:
        table=report(
            f"{RESULTS}/landscape/band.csv",
            caption="../report/band.rst",
            category="Band of critical values",
            labels={"item": "band table"},
        ),
        json=f"{RESULTS}/landscape/band.json",
        figure=report(
            f"{RESULTS}/landscape/band.png",
            caption="../report/band_figure.rst",
            category="Band of critical values",
            labels={"item": "loss against index, band against width"},
        ),
    log:
        f"{LOGS}/band.log",
    benchmark:
        f"{LOGS}/band.benchmark.tsv"
    localrule: True
    conda:
        "../../envs/lossatlas.yaml"
    params:
        settings=step_settings("band"),
        names=list(EXPERIMENTS),
    script:
        "../scripts/step.py"


rule compare:
    """Every non-reference experiment's good draws against the reference's, before and after
    mapping them back through the dataset transform."""
    input:
        samples=expand(f"{RESULTS}/{{exp}}/samples.h5", exp=list(EXPERIMENTS)),
        datasets=expand(f"{RESULTS}/{{exp}}/dataset.npz", exp=list(EXPERIMENTS)),
    output:
        table=report(
            f"{RESULTS}/landscape/compare.csv",
            caption="../report/compare.rst",
            category="Comparison with the reference",
            labels={"item": "comparison table"},
        ),
        json=f"{RESULTS}/landscape/compare.json",
        figure=report(
            f"{RESULTS}/landscape/compare.png",
            caption="../report/compare_figure.rst",
            category="Comparison with the reference",
            labels={"item": "comparison figure"},
        ),
    log:
        f"{LOGS}/compare.log",
    benchmark:
        f"{LOGS}/compare.benchmark.tsv"
    conda:
        "../../envs/lossatlas.yaml"
    resources:
        mem_mb=2048,
        runtime=30,
    params:
        settings=step_settings("compare"),
        names=list(EXPERIMENTS),
    script:
        "../scripts/step.py"


rule theory:
    """The config's expected answers (config/theory/): each theorem's prediction against what
    the census, the connect step and paths between known points measure."""
    input:
        datasets=expand(f"{RESULTS}/{{exp}}/dataset.npz", exp=list(EXPERIMENTS)),
        census=expand(f"{RESULTS}/{{exp}}/landscape/census.csv", exp=list(EXPERIMENTS)),
        connect=expand(
            f"{RESULTS}/{{exp}}/landscape/connect.csv", exp=list(EXPERIMENTS)
        ),
    output:
        table=report(
            f"{RESULTS}/checks.csv",
            caption="../report/checks.rst",
            category="theory checks",
            labels={"item": "predicted against measured"},
        ),
    log:
        f"{LOGS}/theory.log",
    benchmark:
        f"{LOGS}/theory.benchmark.tsv"
    conda:
        "../../envs/lossatlas.yaml"
    resources:
        mem_mb=1024,
        runtime=30,
    params:
        settings=step_settings("theory"),
        names=list(EXPERIMENTS),
    script:
        "../scripts/step.py"
