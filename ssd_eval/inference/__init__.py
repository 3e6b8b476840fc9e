"""Layer 2: image to detections: preprocess, onnxruntime session, postprocess, model facts, CPU."""
