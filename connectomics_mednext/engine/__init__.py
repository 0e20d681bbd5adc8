"""Our own training and inference engine (no PyTC needed)."""
