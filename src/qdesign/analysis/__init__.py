"""Tables and what they say: ECR, aggregation, mixed precision, allocation, the scaling law,
advice, findings. Torch-free."""
