"""One run: set-up, barrier, drain, the Record it hands on."""
