"""Running work: the one training loop, training, checkpoints, the results store, the studies (each notebook's
work), the grid, executors and the planner.
"""
