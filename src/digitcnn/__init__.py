"""digitcnn: handwritten-digit recognition on PyTorch (the public API is assembled once all modules land)."""
