import { describe, expect, it } from "vitest";
import { codesFromCsv } from "./csv";
import { countdown, localTimes, percent, usesLeft, when } from "./format";
import { withQuery } from "./api/client";

describe("countdown", () => {
  const now = Date.parse("2026-12-02T14:00:00Z");
  it("shows minutes and seconds left", () => expect(countdown("2026-12-02T14:04:05Z", now)).toBe("4:05"));
  it("says expired once the time has passed", () => expect(countdown("2026-12-02T13:59:59Z", now)).toBe("expired"));
  it("is empty without a lock", () => expect(countdown(undefined, now)).toBe(""));
});

describe("localTimes", () => {
  it("puts a service's UTC times in the reader's own words", () => {
    const sentence = "Coupon A-1 is locked until 2026-12-03T17:12:19Z: unlock it first.";
    const local = when("2026-12-03T17:12:19Z");
    expect(local).not.toContain("T17:12:19Z");
    expect(localTimes(sentence)).toBe(`Coupon A-1 is locked until ${local}: unlock it first.`);
  });
  it("leaves other numbers alone", () => expect(localTimes("holds 2 of at most 2")).toBe("holds 2 of at most 2"));
});

describe("usesLeft", () => {
  it("subtracts the uses made", () => expect(usesLeft(1, 3)).toBe("2"));
  it("never goes below zero", () => expect(usesLeft(4, 3)).toBe("0"));
  it("reads 0 as no limit", () => expect(usesLeft(0, 0)).toBe("unlimited"));
});

describe("percent", () => {
  it("floors and caps", () => {
    expect(percent(9999, 10000)).toBe(99);
    expect(percent(10000, 10000)).toBe(100);
    expect(percent(1, 0)).toBe(0);
  });
});

describe("codesFromCsv", () => {
  it("takes the first column, drops a header, blank lines and quotes", () => {
    expect(codesFromCsv('code,note\r\nA1,x\n\n"B2",y\nC3\n')).toEqual(["A1", "B2", "C3"]);
  });
  it("keeps a first line that is a code", () => expect(codesFromCsv("A1\nB2")).toEqual(["A1", "B2"]));
});

describe("withQuery", () => {
  it("leaves out empty values and encodes the rest", () => {
    expect(withQuery("/api/v1/books", { name_contains: "a b", status: "", page_size: 20 })).toBe(
      "/api/v1/books?name_contains=a+b&page_size=20",
    );
  });
});
