"""Evaluation of exported models: metrics (numpy) and the HTML report."""
