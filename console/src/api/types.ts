// Short names for the schemas generated from the gateway's /openapi.json (schema.d.ts, `make console-types`).
import type { components } from "./schema";

type S = components["schemas"];
export type User = S["coupons.auth.v1.User"];
export type Session = S["coupons.auth.v1.Session"];
export type Book = S["coupons.books.v1.Book"];
export type BookStats = S["coupons.books.v1.BookStats"];
export type GenerateProgress = S["coupons.books.v1.GenerateCodesProgress"];
export type UploadReport = S["coupons.books.v1.UploadCodesResponse"];
export type Coupon = S["coupons.redemption.v1.Coupon"];
export type CouponState = NonNullable<Coupon["state"]>;
export type LockResponse = S["coupons.redemption.v1.LockCouponResponse"];
export type RedeemResponse = S["coupons.redemption.v1.RedeemCouponResponse"];
export type Pool = S["coupons.pools.v1.Pool"];
export type MemberResult = S["coupons.pools.v1.MemberResult"];
export type DistributeRequest = S["coupons.pools.v1.DistributeRequest"];
export type DistributionPlan = S["coupons.pools.v1.DistributionPlan"];
export type Distribution = S["coupons.pools.v1.Distribution"];
export type Status = S["google.rpc.Status"];
export type ListBooksResponse = S["coupons.books.v1.ListBooksResponse"];
export type ListCouponsResponse = S["coupons.redemption.v1.ListCouponsResponse"];
export type ListHistoryResponse = S["coupons.redemption.v1.ListHistoryResponse"];
export type ListPoolsResponse = S["coupons.pools.v1.ListPoolsResponse"];
export type ListPoolMembersResponse = S["coupons.pools.v1.ListPoolMembersResponse"];
export type ListUsersResponse = S["coupons.auth.v1.ListUsersResponse"];
export type AddMembersResponse = S["coupons.pools.v1.AddPoolMembersResponse"];
