"""Figures and report pages, drawn from the tables only. Torch-free."""
