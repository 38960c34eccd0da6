"""Development benchmarks: they need torch and the training package, so they live outside the
serving package (the image ships ``container/inference_server`` only)."""
