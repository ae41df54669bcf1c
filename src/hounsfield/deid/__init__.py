"""De-identification (issue 12): PS3.15 Annex E's Basic Application Level Confidentiality Profile and options."""
