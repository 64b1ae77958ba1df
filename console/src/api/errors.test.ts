import { describe, expect, it } from "vitest";
import { ApiError, explain } from "./errors";

const locked = {
  code: 9,
  message: "Coupon SUMMER-1 is locked until 2026-12-02T14:44:33Z: redeem with its lock id or unlock it first.",
  details: [
    { "@type": "type.googleapis.com/google.rpc.PreconditionFailure", violations: [] },
    { "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "COUPON_LOCKED", domain: "redemption.coupons" },
  ],
};

describe("explain", () => {
  it("titles a known reason and keeps the service's sentence", () => {
    const error = new ApiError(400, locked);
    expect(error.reason).toBe("COUPON_LOCKED");
    expect(explain(error)).toEqual({ title: "This coupon is locked for a checkout", detail: locked.message });
  });

  it("falls back to the HTTP status for a reason it does not know", () => {
    const error = new ApiError(409, { code: 10, message: "Retry.", details: [] });
    expect(explain(error).title).toBe("Someone else changed this first");
  });

  it("says a failed fetch is a lost connection", () => {
    expect(explain(new TypeError("Failed to fetch")).title).toBe("No connection");
  });

  it("still says something when the body had no message", () => {
    expect(new ApiError(502, { code: 14 }).message).toBe("The request failed (HTTP 502).");
  });
});
