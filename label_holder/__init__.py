"""The third-party label holder of HE jobs: the only party with the CKKS secret key.

A role of its own (not a station): it holds the labels and the classifier head, runs on the
party runtime, and is started with ``feddiff labels --config job.yaml --id <label_holder>``
(``feddiff edge --id <label_holder>`` also works).
"""
