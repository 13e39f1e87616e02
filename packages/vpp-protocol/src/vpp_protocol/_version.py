"""Versions of the distribution and of the wire protocol it speaks."""

__version__ = "0.1.0"

#: Wire protocol version sent in Register / RegisterResult. Bumped only when a
#: peer needs to behave differently; additive schema changes do not bump it.
PROTOCOL_VERSION = 1
