"""Baselines the BNN is compared with: :mod:`.fit_and_select` (one sasmodels fit per class, selection by BIC)."""
