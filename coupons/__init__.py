"""Generated gRPC stubs (``make stubs``); only this file is kept in git."""
