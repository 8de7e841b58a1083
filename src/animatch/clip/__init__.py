"""CLIP: contrastive losses, training, batched embedding with a cache, matching and search."""
