"""Version of the vpp-headend distribution."""

__version__ = "0.1.0"
