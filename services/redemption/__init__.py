"""The redemption service: the coupon ledger (assignment, lock, unlock, redeem, history)."""
