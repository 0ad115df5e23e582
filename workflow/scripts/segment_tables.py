"""Glue: segmentation runs -> tidy CSV -> Tables 1, 15 and 16 (Markdown + LaTeX), and an HTML page of each
table and of the tidy runs (the report caption under it) for the report."""

from bayes_transfer.results import html
from bayes_transfer.results.aggregate import to_latex, to_markdown
from bayes_transfer.logs import job_log
from bayes_transfer.stages.segmentation import CAPTIONS, segmentation_tables, table_note, tidy_segmentation_runs
from bayes_transfer.io import write_csv, atomic_write_text

out = snakemake.output
with job_log(snakemake.log[0], "segmentation tables"):
    tidy = tidy_segmentation_runs(snakemake.input)
    write_csv(out.tidy, tidy)
    captions = snakemake.params.captions
    html.write(out.tidy_html, html.table_page(
        tidy, index=False, title="Segmentation: every run (tidy table)", source=out.tidy,
        caption=html.render_caption(captions["runs"], snakemake)))
    note = table_note(tidy)
    for name, table in segmentation_tables(tidy, list(snakemake.params.datasets),
                                                     list(snakemake.params.backbones)).items():
        caption = f"{CAPTIONS[name]} {note}"
        atomic_write_text(out[f"{name}_md"], to_markdown(table, caption))
        # to_latex escapes "_" and "±" only; "%" would start a LaTeX comment
        atomic_write_text(out[f"{name}_tex"], to_latex(table, caption.replace("%", r"\%"), f"tab:{name}_segmentation"))
        html.write(out[f"{name}_html"], html.table_page(
            table, title=caption, caption=html.render_caption(captions[name], snakemake),
            source=f"{out[name + '_md']} and {out[name + '_tex']}"))
