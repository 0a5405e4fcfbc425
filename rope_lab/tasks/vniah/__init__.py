"""Video needle-in-a-haystack (``task=vniah``) and its distractor variant (``task=vniah_d``, VideoRoPE)."""
