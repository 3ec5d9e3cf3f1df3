"""A device for tests/test_delivery_soak.py: the daemon's MQTT side (MqttPublisher over its
Outbox, default backoff) sending one numbered event every 0.2 s, as `fall-edge run` hands them
over. It prints each number once the outbox file holds it (from the flusher thread): the parent
may SIGKILL it at any moment, and an event printed here must reach the control room.

    python tests/soak_device.py PORT OUTBOX FIRST_NUMBER
"""

import sys
import time
import uuid
from pathlib import Path

from edge.config import MqttConfig
from edge.mqtt.outbox import Outbox
from edge.mqtt.publisher import MqttPublisher


class ReportingOutbox(Outbox):
    """The real outbox, saying which event numbers it has stored in its file."""

    def put(self, topic, payload):
        seq = super().put(topic, payload)
        if seq is not None:
            print(payload["n"], flush=True)
        return seq


def main() -> None:
    port, outbox_path, number = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    config = MqttConfig(enabled=True, host="127.0.0.1", port=port, device="soak", outbox_path=str(outbox_path))
    publisher = MqttPublisher(config, ReportingOutbox(outbox_path))
    publisher.start()
    while True:
        publisher.send_event("cam0", {"event_id": str(uuid.uuid4()), "type": "fall_detected", "camera": "cam0",
                                      "track_id": 1, "n": number, "sent_at": time.time()})
        number += 1
        time.sleep(0.2)


if __name__ == "__main__":
    main()
