# Stages 5-6: all runs -> one tidy table -> the paper's figures and tables.


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
        md=report(
            "results/tables/table_{pretraining}.md",
            caption="../report/table_test_error.rst",
            category="Tables 2-5, 10-13",
            labels={"pretraining": "{pretraining}", "table": "test error"},
        ),
        tex="results/tables/table_{pretraining}.tex",
        shifted_md=report(
            "results/tables/table14_shifted_{pretraining}.md",
            caption="../report/table14.rst",
            category="Table 14 (shifted test)",
            labels={"pretraining": "{pretraining}", "table": "shifted test error"},
        ),
        shifted_tex="results/tables/table14_shifted_{pretraining}.tex",
    params:
        methods=METHOD_LIST,
        dataset=config["data"]["dataset"],
    log:
        "results/logs/tables/{pretraining}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables.py"
