"""Task statistics across every worker: per-minute aggregates in the database.

Workers count what they settle in memory (:mod:`djqueue.worker.tally`) and write their counts
with their heartbeat, one upsert per beat; the admin's chart and the Prometheus metrics
(:mod:`djqueue.contrib.prometheus`) read them (:mod:`djqueue.stats.read`). Rows older than
``DJQUEUE_STATS_RETENTION`` are rolled up into per-task totals (:mod:`djqueue.stats.prune`).
"""
