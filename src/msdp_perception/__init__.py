"""Perception: sensors in, MSDP embeddings out (the MSDP model, rosbag datasets, pretraining, encoder node)."""
