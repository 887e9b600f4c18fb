"""Algorithms 1 and 4: channel ranking criteria, the pruner state the training loop drives, pruning runs and
architecture descent.
"""
