"""Local HTTP servers that speak remote providers' real wire formats, for tests."""
