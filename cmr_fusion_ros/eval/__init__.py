"""Evaluation: retrieval metrics, benchmark harness, reports."""
