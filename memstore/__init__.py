"""memloss package."""
