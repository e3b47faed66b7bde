"""Code shared by the reference training images (slot_tagger, topic_classifier).

Everything here depends on NumPy and the standard library only, so an image is
`python:3.13-slim` plus NumPy and this folder.

- `sagemaker`: the SageMaker training-container contract (paths, configs, failure file).
- `hyperparameters`: parsing of the string-valued hyperparameters, with the seed's prefixes.
- `data`: JSON Lines reading with line-numbered errors, and the deterministic hold-out split.
- `metrics`: the evaluation report in the Factory's `log` shape, and the majority baseline.
- `nn`: the small NumPy network pieces (gated MLP head, momentum SGD, learning-rate decay).
- `training`: the training loop and entry point the images share.
"""
