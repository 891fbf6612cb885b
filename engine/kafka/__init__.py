"""The optional bridge between the engine's bus and Kafka: the wire format (`envelope`), the
outage spool (`spool`), and the egress/ingress services built on them.

Kept free of imports so that importing one piece (e.g. the envelope in a remote agent) does not
pull in the Kafka client.
"""
