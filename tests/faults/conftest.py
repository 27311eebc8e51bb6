"""Keeps pytest out of the fault harness: it is a script (`make faults`), not tests."""

collect_ignore_glob = ["*"]
