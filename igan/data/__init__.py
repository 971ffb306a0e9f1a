"""Data: raw-format readers, embedded sets, labeled-subset selection, pixel scaling, shard streaming."""
