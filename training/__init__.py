"""Training pipeline: load tickets, split, fine-tune, export, evaluate, package.

Run ``python -m training --help``. Heavy imports (torch, transformers) happen inside the
functions that need them, so ``training.data`` and ``training.noise`` stay light.
"""
