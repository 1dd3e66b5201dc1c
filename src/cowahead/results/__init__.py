"""The results layer, between the producers (model, engine, real runs, kernel) and the report.

- ``header``: the one header builder every document uses, and the version history;
- ``rows``: one result row per trace × policy (counters, predicted time), from the model or the engine;
- ``summary``: per policy family the best window, and the verdict;
- ``heatmap``: a workload's fault heatmap data;
- ``document``: the results document ``evaluate`` and ``sweep`` write and ``report`` reads.

``report/`` only renders what these hold. The submodules are imported by name (nothing is imported
here), so that the trace format can use ``header`` without loading the model or the engine.
"""
