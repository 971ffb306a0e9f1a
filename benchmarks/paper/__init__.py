"""The paper's result tables as igan searches (``benchmarks/paper_tables.py``), one job per module:

* :mod:`~benchmarks.paper.tables`: each table's rows, base preset, metric and the paper's figures;
* :mod:`~benchmarks.paper.grid`: a table as one Ray Tune grid (rows x seeds) and each scale's settings;
* :mod:`~benchmarks.paper.fixtures`: small synthetic shard roots in the real formats, for smoke runs;
* :mod:`~benchmarks.paper.reference`: the real-data row of Table 3 (real test images scored);
* :mod:`~benchmarks.paper.report`: mean +- std over seeds beside the paper's figure, as markdown.
"""
