"""Analysis: dataframe-returning processors over events frames (log patterns, anomalies...).

Each processor takes an events frame and returns a polars DataFrame with documented columns;
none of them writes to the store.
"""

from __future__ import annotations

from lumin_nb.analysis.anomalies import anomalies, score_series
from lumin_nb.analysis.log_patterns import log_patterns, mine_templates

__all__ = ["anomalies", "log_patterns", "mine_templates", "score_series"]
