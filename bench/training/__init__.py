"""Training a row's stages: pre-training (MAXL, joint), MTL and supervised fine-tuning, and the
stage cache that keys each checkpoint by what produced it."""
