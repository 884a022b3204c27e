"""Project-wide defaults, in a module light enough for the CLI to import before torch."""

DEFAULT_MODEL = "shufflenet_v2_x0_5_fer2013"  # what Analyzer(), the CLI and the service use when no model is named
PRECISIONS = ("auto", "fp32", "int8")  # ONNX Runtime classifier precisions (lightfer.classifier.ExpressionClassifier)
