"""1-D rotary variants on token indices: RoPE, p-RoPE, HiRoPE, EliteKV (RoPElite), AnchorAttention."""
