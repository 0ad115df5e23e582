"""Glue: segmentation runs -> tidy CSV -> Tables 1, 15 and 16 (Markdown + LaTeX), and an HTML page of each
table and of the tidy runs (the report caption under it) for the report."""
from pathlib import Path

from bayes_transfer.results import html
from bayes_transfer.results.aggregate import to_latex, to_markdown
from bayes_transfer.logs import job_log
from bayes_transfer.stages.segmentation import CAPTIONS, segmentation_tables, table_note, tidy_segmentation_runs

out = snakemake.output
with job_log(snakemake.log[0], "segmentation tables"):
    tidy = tidy_segmentation_runs(snakemake.input)
    tidy.to_csv(out.tidy, index=False)
    captions = snakemake.params.captions
    html.write(out.tidy_html, html.table_page(
        tidy, index=False, title="Segmentation: every run (tidy table)", source=out.tidy,
        caption=html.render_caption(captions["runs"], snakemake)))
    note = table_note(tidy)
    for name, table in segmentation_tables(tidy, list(snakemake.params.datasets),
                                                     list(snakemake.params.backbones)).items():
        caption = f"{CAPTIONS[name]} {note}"
        Path(out[f"{name}_md"]).write_text(to_markdown(table, caption))
        # to_latex escapes "_" and "±" only; "%" would start a LaTeX comment
        Path(out[f"{name}_tex"]).write_text(to_latex(table, caption.replace("%", r"\%"), f"tab:{name}_segmentation"))
        html.write(out[f"{name}_html"], html.table_page(
            table, title=caption, caption=html.render_caption(captions[name], snakemake),
            source=f"{out[name + '_md']} and {out[name + '_tex']}"))
