"""A loopback MQTT proxy that loses exactly one message in transit (see ``DroppingProxy``)."""

from __future__ import annotations

import time

class DroppingProxy:
    """A loopback TCP proxy in front of the broker for ONE party, which loses exactly one
    message in transit: the first PUBLISH from the broker whose envelope matches ``match``
    (a function of the parsed header) is not passed on, and the proxy answers the broker's
    QoS-1 delivery with a PUBACK of its own, so the broker believes it delivered the message
    and never resends it. That is what a broker crash between accepting a message and
    delivering it does; here it is deterministic. Everything else passes byte for byte.

    MQTT 3.1.1 framing only: a fixed-header byte, the remaining length (varint), the body.
    """

    def __init__(self, broker_port: int, match) -> None:
        import socket
        import threading

        self.broker_port, self.match = broker_port, match
        self.dropped: list[dict] = []
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def _read_packet(sock) -> bytes | None:
        def exact(n: int) -> bytes | None:
            buf = b""
            while len(buf) < n:
                chunk = sock.recv(n - len(buf))
                if not chunk:
                    return None
                buf += chunk
            return buf

        head = exact(1)
        if head is None:
            return None
        length, mult, raw = 0, 1, b""
        while True:
            b = exact(1)
            if b is None:
                return None
            raw += b
            length += (b[0] & 0x7F) * mult
            mult *= 128
            if not b[0] & 0x80:
                break
        body = exact(length) if length else b""
        return None if body is None else head + raw + body

    def _accept(self) -> None:
        import socket
        import threading

        while not self._closing:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.broker_port))
            lock = threading.Lock()  # both directions may write to upstream (the fake PUBACK)
            threading.Thread(target=self._pump, args=(client, upstream, lock, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, lock, True), daemon=True).start()

    def _pump(self, src, dst, lock, from_broker: bool) -> None:
        from feddiff.protocol.envelope import unpack

        upstream = src if from_broker else dst
        try:
            while True:
                pkt = self._read_packet(src)
                if pkt is None:
                    break
                if from_broker and pkt[0] >> 4 == 3 and not self.dropped:  # PUBLISH
                    qos = (pkt[0] >> 1) & 3
                    i = 1
                    while pkt[i] & 0x80:
                        i += 1
                    i += 1
                    tlen = int.from_bytes(pkt[i:i + 2], "big")
                    topic = pkt[i + 2:i + 2 + tlen].decode("utf-8", "replace")
                    j = i + 2 + tlen
                    pid = pkt[j:j + 2] if qos else b""
                    payload = pkt[j + (2 if qos else 0):]
                    try:
                        header = unpack(topic, payload, 10**9).header
                    except Exception:  # noqa: BLE001 - not an envelope: pass it on
                        header = None
                    if header is not None and self.match(header):
                        self.dropped.append({"topic": topic, "content_type": header.content_type, "round": header.round, "step": header.step, "at": time.time()})
                        if qos == 1:
                            with lock:
                                upstream.sendall(b"\x40\x02" + pid)
                        continue
                if from_broker:
                    dst.sendall(pkt)
                else:
                    with lock:
                        dst.sendall(pkt)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._closing = True
        self.server.close()
