"""Coverage-guided fuzzing of ingest's readers (HL7 v2, FHIR, JSON, clinical context): make fuzz."""
