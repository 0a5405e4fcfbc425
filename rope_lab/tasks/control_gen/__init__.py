"""Time-aligned control of generation (``task=control_gen``): MuseControlLite's setting on images."""
