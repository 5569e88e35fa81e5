"""Transport layer of the FedDiff core: MQTT clients (``mqtt``) and brokers to run (``broker``).

Nothing here knows about envelopes: a transport moves (topic, bytes) pairs, QoS 1.
"""
