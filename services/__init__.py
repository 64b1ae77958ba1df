"""The four services; each package holds only its own domain, data access and servicer."""
