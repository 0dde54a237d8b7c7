"""Evaluation: task metrics, reports and plots."""
