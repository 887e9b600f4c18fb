"""Algorithms 2 and 3: the power law and its fit, budget metrics, the budget solver and path scan, the scaling
methods and baselines, latency.
"""
