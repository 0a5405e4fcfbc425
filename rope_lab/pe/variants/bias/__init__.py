"""Attention-logit bias baselines: ALiBi, T5 relative bias, FoX, CoPE, xPos and their shared site
(``logit_bias``)."""
