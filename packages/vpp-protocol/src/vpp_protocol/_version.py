"""Versions of the distribution and of the wire protocol it speaks."""

__version__ = "0.1.0"

#: Wire protocol version sent in Register / RegisterResult. Bumped only when a
#: peer needs to behave differently; additive schema changes alone do not bump it.
#: 2: the agent reports live envelopes, honours Setpoint.ends_at / duration_s and
#: takes Release; a headend must not count on either from an agent that says 1.
PROTOCOL_VERSION = 2
