"""Reports over an experiment's findings: one self-contained HTML page (`html.build_html`) and a W&B report as
code (`wandb_report`); `python -m harness.report` writes both. Submodules are imported where used, so that the
tracker can use `tables` without importing plotly."""
