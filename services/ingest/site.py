"""The site's settings as the plain values the feed readers take, so that only the glue (the
pipeline, `plateletwatch replay`) reads the configuration system and the readers stay pure."""

from datetime import datetime

from services.config import Settings
from services.ingest.codes import FeedContext


def site_context(settings: Settings, received_at: datetime) -> FeedContext:
    """The feed context for one input received at `received_at`: the site's time zone, local
    platelet-count codes and FHIR reference authority."""
    return FeedContext(
        received_at=received_at,
        local_zone=settings.local_zone,
        local_platelet_codes=settings.local_platelet_codes,
        fhir_reference_authority=settings.ingest_fhir_reference_authority,
    )
