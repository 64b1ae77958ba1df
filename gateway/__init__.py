"""HTTP/JSON gateway: discovers the gRPC backends by reflection and transcodes by their google.api.http rules."""
