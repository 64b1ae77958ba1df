"""Coupon books: configuration, rules, code generation and upload (the control plane)."""
