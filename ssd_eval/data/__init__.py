"""Layer 1: COCO annotations and images, and named image subsets."""
