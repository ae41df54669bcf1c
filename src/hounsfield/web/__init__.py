"""The HTTP side: REST API, DICOMweb and the browser UI, all thin over the domain layer."""
