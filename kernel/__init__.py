"""The shared service kernel: settings, database, errors, tokens, interceptors, server bootstrap."""
