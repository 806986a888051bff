"""gwms-cloud: glidein factory and VO frontend that provision HTCondor pilots on clouds."""

__version__ = "0.1.0"
