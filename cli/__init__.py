"""The operator CLI (`python -m cli` or `coupons-cli`), on the generated gRPC stubs."""
