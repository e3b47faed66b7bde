"""The slot_tagger training image (task ml_tagger)."""
