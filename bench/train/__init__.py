"""Trainers for each stage: pre-training (MAXL, joint), MTL fine-tuning, supervised fine-tuning."""
