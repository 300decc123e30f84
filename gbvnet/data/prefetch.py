"""Work done ahead of its consumer in a thread of its own: video frames decoded while faces are searched
(:mod:`gbvnet.data.video`), batches read and copied to the device while the model trains (:mod:`gbvnet.data.loader`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator


def read_ahead(items: Iterator, depth: int = 4, name: str = "gbvnet-read-ahead") -> Iterator:
    """``items``, produced by a thread of their own up to ``depth`` items ahead of the consumer; an error in the
    producer is raised to the consumer, and a consumer that stops early stops (and closes) the producer."""
    slots: queue.Queue = queue.Queue(depth)
    stop, end = threading.Event(), object()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            put((end, exc))
        finally:
            items.close()

    producer = threading.Thread(target=produce, name=name, daemon=True)
    producer.start()
    try:
        while True:
            item, error = slots.get()
            if item is end:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        producer.join()
