"""Class-conditional image generation by rectified flow (``task=image_gen``)."""
