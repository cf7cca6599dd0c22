"""Neutral helpers at the bottom of trainer/, imported by every other subpackage and importing none of them: atomic
file writes and checksums, device choice, size and fraction parsing, package versions."""
