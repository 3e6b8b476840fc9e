"""Layer 2: detections to numbers: COCO backends, streaming, match tables, bootstrap, error breakdown."""
