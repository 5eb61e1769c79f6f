"""What people see during a run: the observer, the live verifier process, the web view."""
