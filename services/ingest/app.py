"""Ingest's composition root: the one place that turns settings into a running service.

`create_app` builds the Kafka publisher, the pipeline, the MLLP server and the HTTP app, and ties
their lifetimes together: starting the HTTP app starts the publisher, then the MLLP server;
stopping it stops them in reverse order. A treatment table that cannot be read raises before
anything starts. The caller checks the broker and its topics first (`plateletwatch ingest`).
"""

from fastapi import FastAPI

from services.config import Settings
from services.ingest.hl7v2.mllp import MllpLimits, MllpServer
from services.ingest.http_api import create_app as create_http_app
from services.ingest.pipeline import IngestPipeline
from services.ingest.treatments import load_treatment_table
from services.kafka.producer import EventPublisher


def mllp_limits(settings: Settings) -> MllpLimits:
    """The site's bounds on MLLP connections: message size, idle and frame timeouts, count."""
    return MllpLimits(
        settings.ingest_mllp_max_message_bytes,
        settings.ingest_mllp_idle_timeout_seconds,
        settings.ingest_mllp_frame_timeout_seconds,
        settings.ingest_mllp_max_connections,
    )


def create_app(settings: Settings, bootstrap_servers: str) -> FastAPI:
    """The ingest service: HTTP feeds on the app, HL7 v2 over MLLP started with it."""
    treatments = load_treatment_table(settings.ingest_treatment_table_file)
    publisher = EventPublisher(
        bootstrap_servers, "plateletwatch-ingest", settings.kafka_produce_timeout_seconds
    )
    pipeline = IngestPipeline(settings, publisher)
    mllp = MllpServer(
        pipeline, settings.bind_host, settings.ingest_mllp_port, mllp_limits(settings), treatments
    )

    async def start() -> None:
        await publisher.start()
        await mllp.start()

    async def stop() -> None:
        await mllp.stop()
        await publisher.stop()

    return create_http_app(settings, pipeline, treatments, start, stop)
