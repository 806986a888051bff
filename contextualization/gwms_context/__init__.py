"""VM-side code of gwms-cloud. Runs on the image's system Python: stdlib only, Python 3.6 syntax."""

__version__ = "0.1.0"
