"""Fused recall statistics: an autograd function and its Triton kernels."""
