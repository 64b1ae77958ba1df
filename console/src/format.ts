// Plain-language renderings of what the API returns.
import type { CouponState } from "./api/types";

export const STATE_LABELS: Record<CouponState, string> = {
  COUPON_STATE_UNSPECIFIED: "Unknown",
  AVAILABLE: "Available",
  ASSIGNED: "Ready to use",
  LOCKED: "Locked",
  REDEEMED: "Redeemed",
  EXPIRED: "Expired",
};

// "4:05" for a lock that ends in 4 minutes 5 seconds; "expired" once it has passed.
export function countdown(until: string | undefined, now: number): string {
  if (!until) return "";
  const left = Math.floor((Date.parse(until) - now) / 1000);
  if (left <= 0) return "expired";
  const minutes = Math.floor(left / 60);
  const seconds = String(left % 60).padStart(2, "0");
  return `${minutes}:${seconds}`;
}

// How often a coupon can still be used: max_redemptions is 0 for "no limit of its own".
export function usesLeft(count: number | undefined, max: number | undefined): string {
  if (!max) return "unlimited";
  return String(Math.max(max - (count ?? 0), 0));
}

export function percent(done: number, total: number): number {
  return total > 0 ? Math.min(100, Math.floor((done * 100) / total)) : 0;
}

export function when(time: string | undefined): string {
  return time ? new Date(time).toLocaleString() : "";
}

// A service's sentence with its UTC timestamps ("locked until 2026-12-03T17:12:19Z") in the reader's own
// date and time.
const UTC_TIME = /\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|\+00:00)/g;

export function localTimes(text: string): string {
  return text.replace(UTC_TIME, (time) => when(time));
}
