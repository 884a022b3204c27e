"""Evaluation: metrics, reports, benchmarks, explanations."""
