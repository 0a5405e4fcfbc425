"""Agent-trajectory variants on (x, y, heading): DRoPE, 2-D RoPE and the query-centric RPE baseline."""
