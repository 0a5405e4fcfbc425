"""Backbones: variant-agnostic transformers that talk to positions only through the PE interface."""
