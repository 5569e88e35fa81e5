"""Transport layer of the FedDiff core: MQTT clients (``mqtt``); the broker launcher lives in ``feddiff_app.broker``.

Nothing here knows about envelopes: a transport moves (topic, bytes) pairs, QoS 1.
"""
