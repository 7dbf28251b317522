"""faust's Kafka consumer, waiting per fetch only as long as the settings say.

faust-streaming builds its aiokafka consumer with `fetch_max_wait_ms=1500` and no setting for it.
A broker that holds a waiting fetch for that long even when records arrive (embedded Tansu) then
makes every result wait up to 1.5 s before the classifier sees it. `wait_at_most` gives an app a
transport whose consumer is built exactly as faust builds it, then told the configured wait.
"""

import asyncio

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_kafka


def wait_at_most(app: faust.App, seconds: float) -> None:
    """Have the app's consumer wait at most `seconds` per fetch. Call before the worker starts:
    the consumer it replaces faust's with is built when the worker starts. Starting the worker
    raises RuntimeError if aiokafka no longer keeps the wait where this sets it."""
    app.transport = _transport_waiting(round(seconds * 1000))(app.conf.broker_consumer, app)


def _transport_waiting(fetch_max_wait_ms: int) -> type[faust_kafka.Transport]:
    class ConsumerThread(faust_kafka.AIOKafkaConsumerThread):
        def _create_consumer(self, loop: asyncio.AbstractEventLoop) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_consumer(loop)
            if not hasattr(consumer, "_fetch_max_wait_ms"):  # read by its Fetcher at start()
                raise RuntimeError("this aiokafka keeps no _fetch_max_wait_ms to configure")
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class WaitingConsumer(faust_kafka.Consumer):
        def _new_consumer_thread(self) -> faust_kafka.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(faust_kafka.Transport):
        Consumer = WaitingConsumer

    return Transport
