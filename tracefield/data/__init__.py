"""Synthetic 4D data: procedural scenes with exact trajectories, for training and evaluation."""
