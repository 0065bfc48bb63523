"""Networks in torch: models, data, training, evaluation, retraining methods, sensitivity, and one cell end to end."""
