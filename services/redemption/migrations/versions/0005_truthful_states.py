"""A truthful state model: a coupon is stored REDEEMED only when no redemption is left.

Before, the first redemption of a multi-use coupon stored REDEEMED although its holder could still use
it. Now a redeem stores REDEEMED only with its last use (ASSIGNED otherwise), the existing rows are brought
along, and a change of a book's max_redemptions re-states its coupons (repository.put_rules). EXPIRED (a
code past its book's valid_until) is derived at read time like LOCKED, never stored, so no sweeper.

Revision ID: 0005
"""

import importlib

from alembic import op

revision = "0005"
down_revision = "0004"

# Only the redeem's stored state changes; the rest of change_coupon is 0004's, re-created from its text.
_hot_path = importlib.import_module("services.redemption.migrations.versions.0004_hot_path")
CHANGE_COUPON_0004 = next(f for f in _hot_path.FUNCTIONS if "FUNCTION redemption.change_coupon(" in f)
REDEEM_0004 = "UPDATE redemption.coupons SET state = 'REDEEMED', redemption_count"
REDEEM_0005 = """UPDATE redemption.coupons SET
                state = CASE WHEN redemption_count + 1 >= r.max_redemptions THEN 'REDEEMED' ELSE 'ASSIGNED' END,
                redemption_count"""
if REDEEM_0004 not in CHANGE_COUPON_0004:  # the import must find 0004's redeem to replace
    raise LookupError("migration 0004's change_coupon no longer holds its redeem statement")
CHANGE_COUPON_0005 = CHANGE_COUPON_0004.replace(REDEEM_0004, REDEEM_0005)


def _replace(function: str) -> str:
    return function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def upgrade() -> None:
    op.execute(_replace(CHANGE_COUPON_0005))
    op.execute("""UPDATE redemption.coupons c SET state = 'ASSIGNED' FROM redemption.book_rules r
        WHERE r.book_id = c.book_id AND c.state = 'REDEEMED' AND c.redemption_count < r.max_redemptions""")


def downgrade() -> None:
    # The earlier model: REDEEMED after any redemption.
    op.execute("UPDATE redemption.coupons SET state = 'REDEEMED' WHERE state = 'ASSIGNED' AND redemption_count > 0")
    op.execute(_replace(CHANGE_COUPON_0004))
