"""aesweep: train undercomplete autoencoders across bottleneck sizes and report what each keeps."""

__version__ = "0.1.0"
