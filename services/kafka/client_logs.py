"""Keep patient data out of the Kafka client's logs, whatever the log level.

aiokafka's DEBUG lines quote each produced record's key and value (aiokafka.producer.producer)
and every request and response as sent and received (aiokafka.conn: produce requests and fetch
responses carry whole events, with names and birth dates). Those lines are dropped; aiokafka's
other lines and levels stay. Every service calls this at start (services/cli.py).
"""

import logging

_QUOTING_RECORDS = ("aiokafka.producer.producer", "aiokafka.conn")


def _not_debug(record: logging.LogRecord) -> bool:
    return record.levelno > logging.DEBUG


def keep_patient_data_out_of_client_logs() -> None:
    """Idempotent: a filter already added is not added twice."""
    for name in _QUOTING_RECORDS:
        logger = logging.getLogger(name)
        if _not_debug not in logger.filters:
            logger.addFilter(_not_debug)
