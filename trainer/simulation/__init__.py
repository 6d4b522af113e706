"""Simulation of labelled curves with sasmodels (one module per job)."""
