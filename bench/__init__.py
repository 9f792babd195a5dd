"""Benchmarks (not tests): each prints figures and ratios side by side."""
