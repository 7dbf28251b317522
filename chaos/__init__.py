"""`make chaos`: SIGKILL every service of a running pipeline, again and again, and count what was
lost or paged twice (see `chaos.harness`)."""


class ChaosFailure(RuntimeError):
    """The run could not go on (a service never became ready again, ingest refused a result for
    good); the message says which."""
