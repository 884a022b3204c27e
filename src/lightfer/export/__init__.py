"""ONNX export with a parity check against PyTorch."""
from lightfer.export.onnx import check_onnx_parity, export_onnx, ort_session

__all__ = ["check_onnx_parity", "export_onnx", "ort_session"]
