"""`animatch audit`: find image-text pairs that do not match (CLIP screen -> LLaVA verification) and clean them."""
