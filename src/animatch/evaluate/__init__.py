"""Pure metric functions: retrieval (recall, ranks, accuracy) and text (BLEU, ROUGE, keywords, semantic)."""
