"""Workflows in the database: a chord's pending count is a row (:mod:`djqueue.workflow.models`)."""
