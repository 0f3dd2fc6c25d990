"""Benchmarks (`anymodal bench ...`): each prints the baseline measured in the same run and the ratio."""
