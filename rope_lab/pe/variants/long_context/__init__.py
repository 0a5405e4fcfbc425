"""Training-free context extension of a trained RoPE model: ReRoPE, SelfExtend, LM-Infinite and their shared
core (``extension``)."""
