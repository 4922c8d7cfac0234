"""Gather backends: numpy on the CPU, onnxruntime on the CPU or CUDA execution provider."""
