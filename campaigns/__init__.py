"""The campaign domain: pure Python, no I/O. Time is always an argument."""
