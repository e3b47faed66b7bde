"""The topic_classifier training image (task ml_topic)."""
