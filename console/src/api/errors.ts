// A refusal from the API, and what to tell a person about it: a short title for the reason the service gave
// (ErrorInfo.reason) and the service's own sentence, which names the coupon, the time or the limit.
import type { Status } from "./types";

export class ApiError extends Error {
  readonly httpStatus: number;
  readonly reason: string;
  readonly status: Status;

  constructor(httpStatus: number, status: Status) {
    super(status.message || `The request failed (HTTP ${httpStatus}).`);
    this.httpStatus = httpStatus;
    this.status = status;
    this.reason = reasonOf(status);
  }
}

export function reasonOf(status: Status): string {
  for (const detail of status.details ?? []) {
    if (detail["@type"]?.endsWith("google.rpc.ErrorInfo") && typeof detail.reason === "string") {
      return detail.reason;
    }
  }
  return "";
}

const TITLES: Record<string, string> = {
  COUPON_LOCKED: "This coupon is locked for a checkout",
  COUPON_ALREADY_LOCKED: "This coupon is already locked",
  COUPON_NOT_LOCKED: "This coupon is not locked",
  COUPON_ALREADY_REDEEMED: "This coupon has been used",
  NO_REDEMPTIONS_LEFT: "This coupon has no uses left",
  REDEMPTION_LIMIT_REACHED: "You have used this offer as often as allowed",
  COUPON_NOT_ASSIGNED: "This coupon is not handed out",
  COUPON_NOT_AVAILABLE: "This coupon is taken",
  COUPON_NOT_FOUND: "No such coupon",
  WRONG_LOCK_ID: "Another checkout holds this coupon",
  CONCURRENT_OPERATION: "Someone else used this coupon at the same moment",
  ASSIGNMENT_LIMIT_REACHED: "The limit of coupons per person is reached",
  SELF_CLAIM_NOT_ALLOWED: "Coupons of this book are handed out, not claimed",
  NO_CODES_AVAILABLE: "This book has no codes left",
  INSUFFICIENT_CODES: "Not enough codes left in the book",
  BOOK_ARCHIVED: "This book is archived",
  BOOK_EXPIRED: "This book's offer has ended",
  BOOK_NOT_YET_VALID: "This book's offer has not started yet",
  BOOK_BUSY: "This book is busy with another operation",
  BOOK_SHARED: "This book's codes are shared, not handed out",
  COUPON_SHARED: "A shared code is redeemed directly",
  SHARED_LIMIT_REACHED: "This code has been used up",
  USER_LIMIT_REACHED: "You have used this code as often as allowed",
  CURRENCY_MISMATCH: "This code is for another currency",
  ORDER_AMOUNT_REQUIRED: "This code needs the order's amount",
  ORDER_BELOW_MINIMUM: "The order is below this code's minimum",
  REDEMPTION_NOT_FOUND: "No redemption for this order",
  ALREADY_ROLLED_BACK: "This redemption is already rolled back",
  ROLLBACK_WINDOW_PASSED: "It is too late to roll this redemption back",
  INVALID_CREDENTIALS: "Wrong e-mail or password",
  ACCOUNT_DISABLED: "This account is disabled",
  LOGIN_RATE_LIMITED: "Too many sign-in attempts",
  EMAIL_TAKEN: "An account with this e-mail exists already",
  USER_NOT_FOUND: "No such user",
  SELF_LOCKOUT: "You cannot lock yourself out",
  REFRESH_TOKEN_EXPIRED: "Your session has ended: please sign in again",
  REFRESH_TOKEN_REUSED: "Your session has ended: please sign in again",
  INVALID_REFRESH_TOKEN: "Your session has ended: please sign in again",
  UNAUTHENTICATED: "Please sign in again",
  PERMISSION_DENIED: "You may not do this",
};

const BY_HTTP: Record<number, string> = {
  400: "That cannot be done",
  401: "Please sign in again",
  403: "You may not do this",
  404: "Not found",
  409: "Someone else changed this first",
  429: "Too many requests: wait a moment",
  503: "The service is not answering: try again",
};

export interface Explanation {
  title: string;
  detail: string;
}

export function explain(error: unknown): Explanation {
  if (error instanceof ApiError) {
    const title = TITLES[error.reason] ?? BY_HTTP[error.httpStatus] ?? "Something went wrong";
    return { title, detail: error.message };
  }
  if (error instanceof TypeError) {
    return { title: "No connection", detail: "The console could not reach the server." };
  }
  return { title: "Something went wrong", detail: error instanceof Error ? error.message : String(error) };
}
