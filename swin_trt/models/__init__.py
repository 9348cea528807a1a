"""Swin models: zoo configs, YAML configs, timm-based builder, checkpoint loading."""
