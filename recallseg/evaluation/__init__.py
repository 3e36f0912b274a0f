"""Scoring a model: metrics, inference, the evaluation loop, reports and predictions."""
