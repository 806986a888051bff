"""Glidein images: the Packer wrapper, the input hash, the manifest and the rebuild pipeline."""
