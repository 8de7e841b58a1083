"""Model loading (hub id or local dir) and tiny offline checkpoints in the Hub layout."""
