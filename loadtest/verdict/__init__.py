"""From a Record to the report and its files."""
