"""Checkpoint -> self-contained ONNX model with ``dmdet.*`` metadata, checked against PyTorch."""

from export.onnx_export import export_checkpoint, model_info, parity

__all__ = ["export_checkpoint", "model_info", "parity"]
