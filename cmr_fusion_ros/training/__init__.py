"""Training: torch models, dataset from bags, contrastive training, ONNX export. The only package importing torch."""
