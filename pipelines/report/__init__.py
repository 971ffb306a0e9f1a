"""``igan report``: one self-contained HTML page comparing MLflow runs: :mod:`.collect` reads runs
into plain data, :mod:`.curves` and :mod:`.summaries` decide the charts and tables, :mod:`.svg` draws
line charts, :mod:`.page` writes the HTML and :mod:`.build` puts it together."""
