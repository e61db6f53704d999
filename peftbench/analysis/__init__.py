"""From records to conclusions: the analysis reads ``result.json`` files and never imports training.

`report` loads records, summarises them per cell at the held-out-chosen lr, renders the tables and draws the
plots; `stats` holds the statistics and the decision rule; `compare` pairs cells and runs; `costs` what each cell
stores and costs; `findings` reads the paper's claims from all of it.
"""
