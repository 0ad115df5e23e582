"""Glue: segmentation runs -> tidy CSV -> Tables 1, 15 and 16 (Markdown + LaTeX)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # the library, also in a rule conda env
from bayes_transfer.results.aggregate import to_latex, to_markdown
from bayes_transfer.logs import job_log
from bayes_transfer.stages.segmentation import CAPTIONS, segmentation_tables, table_note, tidy_segmentation_runs

out = snakemake.output
with job_log(snakemake.log[0], "segmentation tables"):
    tidy = tidy_segmentation_runs(snakemake.input)
    tidy.to_csv(out.tidy, index=False)
    note = table_note(tidy)
    for name, table in segmentation_tables(tidy, list(snakemake.params.datasets),
                                                     list(snakemake.params.backbones)).items():
        caption = f"{CAPTIONS[name]} {note}"
        Path(out[f"{name}_md"]).write_text(to_markdown(table, caption))
        # to_latex escapes "_" and "±" only; "%" would start a LaTeX comment
        Path(out[f"{name}_tex"]).write_text(to_latex(table, caption.replace("%", r"\%"), f"tab:{name}_segmentation"))
