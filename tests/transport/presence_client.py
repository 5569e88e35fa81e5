"""A party process for the last-will test: connects with a will on its presence topic, says it is
online (retained), prints "ready" and waits to be killed. Run as a script by the test."""

import sys
import time

from feddiff.protocol import topics
from feddiff.transport.mqtt import MqttTransport

if __name__ == "__main__":
    host, port, job, client = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    topic = topics.presence(job, client)
    t = MqttTransport(f"presence-{client}", host, port, keepalive=5, will=(topic, b'{"online": false}'))
    t.connect(10)
    t.publish(topic, b'{"online": true}', retain=True)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    time.sleep(60)
