"""Ingestion: parsers for external logs and the pipeline every batch goes through.

Parsers turn bytes into RecordBatches of the event schema plus a table of rejected lines
(`ParseResult`); `Pipeline` runs batches through validate -> enrich -> redact -> sample ->
batch before the store. Pure functions over Arrow: the HTTP and ZeroMQ endpoints call them.
"""

from __future__ import annotations

from lumin_nb.errors import IngestError
from lumin_nb.ingest.fields import ParseResult
from lumin_nb.ingest.grok import PATTERNS, parse_grok, parse_regex
from lumin_nb.ingest.jsonlog import parse_json, parse_ndjson
from lumin_nb.ingest.logfmt import parse_logfmt
from lumin_nb.ingest.pipeline import FORMATS, Pipeline, PipelineResult, parse
from lumin_nb.ingest.redact import DEFAULT_RULES, RULES, Redactor, redact
from lumin_nb.ingest.sample import AdaptiveSampler, sample
from lumin_nb.ingest.syslog import parse_syslog

__all__ = [
    "DEFAULT_RULES",
    "FORMATS",
    "PATTERNS",
    "RULES",
    "AdaptiveSampler",
    "IngestError",
    "ParseResult",
    "Pipeline",
    "PipelineResult",
    "Redactor",
    "parse",
    "parse_grok",
    "parse_json",
    "parse_logfmt",
    "parse_ndjson",
    "parse_regex",
    "parse_syslog",
    "redact",
    "sample",
]
