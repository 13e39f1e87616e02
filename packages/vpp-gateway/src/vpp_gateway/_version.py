"""Version of the vpp-gateway distribution."""

__version__ = "0.1.0"
