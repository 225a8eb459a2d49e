"""QNN training: circuits, datasets, the classifier model, optimisers and the training loop."""
