"""Variants that own the attention computation: PaTH (data-dependent Householder transforms) and A²ATS
(vector-quantized key retrieval, with its codebooks and retrieval modules)."""
