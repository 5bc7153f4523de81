"""Offline: cut a model into heads and tails, profile them, calibrate exits, write a bundle.

Modules that need torch (models, training, export) are imported where used, so
partitioning an ONNX file needs only onnx and ONNX Runtime.
"""
