# Stages 5-6: all runs -> one tidy table -> the paper's figures and tables.
#
# Every table is also written as an HTML page (bayes_transfer.results.html) and that page is what the report
# shows: its viewer displays images, HTML and PDF inline, while Markdown/CSV results can only be downloaded.
# The page carries the report caption under the table (as do the figures' pages, ablation.smk).

# lambdas, not functions: rule files keep functions in common modules (snakemake --lint)
#: a report caption, workflow/report/NAME.rst: report() takes its path; the page beside a table or figure
#: renders the same text under it (passed as a param, so editing a caption remakes the page)
caption_rst = lambda name: f"../report/{name}.rst"
caption_text = lambda name: (Path(workflow.basedir) / "workflow" / "report" / f"{name}.rst").read_text()
#: the params entry of one caption's text, or of a dict key -> caption text: a function of the wildcards,
#: because Snakemake would take the Jinja2 braces of a plain string param for wildcards
caption_param = lambda name: (lambda wildcards, text=caption_text(name): text)
captions_param = lambda **names: (lambda wildcards, texts={k: caption_text(v) for k, v in names.items()}: texts)


rule aggregate:
    input:
        all_run_files(),
    output:
        tidy="results/tables/runs.csv",
        summary="results/tables/summary.csv",
    log:
        "results/logs/aggregate.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/aggregate.py"


rule tables:
    input:
        summary="results/tables/summary.csv",
    output:
        md="results/tables/table_{pretraining}.md",
        tex="results/tables/table_{pretraining}.tex",
        html=report(
            "results/tables/table_{pretraining}.html",
            caption=caption_rst("table_test_error"),
            category="Tables 2-5, 10-13",
            labels={"pretraining": "{pretraining}", "table": "test error"},
        ),
        shifted_md="results/tables/table14_shifted_{pretraining}.md",
        shifted_tex="results/tables/table14_shifted_{pretraining}.tex",
        shifted_html=report(
            "results/tables/table14_shifted_{pretraining}.html",
            caption=caption_rst("table14"),
            category="Table 14 (shifted test)",
            labels={"pretraining": "{pretraining}", "table": "shifted test error"},
        ),
    params:
        methods=METHOD_LIST,
        dataset=config["data"]["dataset"],
        chains=config["train"]["chains"],
        captions=captions_param(test="table_test_error", shifted_test="table14"),
    log:
        "results/logs/tables/{pretraining}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables.py"
