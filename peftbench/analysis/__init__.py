"""From records to conclusions: the analysis reads ``result.json`` files and never imports training.

`records` loads the records of a folder (one row per run, unusable ones as problems); `cells` summarises each cell
at the lr chosen on the held-out split; `tables` and `plots` render them; `stats` holds the tests over seeds and the
decision rule, `bootstrap` the resampling of dev examples; `compare` pairs cells and their runs by seed; `costs`
says what each cell stores and costs; `next_runs` prints the commands a grid still needs; `report` writes a folder's
report; `findings` reads the paper's claims from all of it.
"""
