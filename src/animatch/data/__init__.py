"""The AniPersonaCaps data layer: metadata schema and reading, safe image loading, prepare, synth."""
