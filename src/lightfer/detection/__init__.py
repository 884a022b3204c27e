"""Face detection: RetinaFace MobileNet-0.25 (PyTorch network, ONNX Runtime inference), NumPy NMS."""
from lightfer.detection.box_utils import box_iou, decode_boxes, decode_landmarks, nms, prior_boxes
from lightfer.detection.detector import DetectorConfig, FaceDetector

__all__ = ["DetectorConfig", "FaceDetector", "box_iou", "decode_boxes", "decode_landmarks", "nms", "prior_boxes"]
