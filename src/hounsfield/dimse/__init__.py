"""The DICOM network side: the AE set-up, thin event handlers and the one outcome → status table."""
