// Who is signed in. The access token lives in memory only; the rotating refresh token is kept in this tab's
// sessionStorage so that a reload keeps the session (and closing the tab ends it). Every refresh returns a
// new refresh token and the old one stops working, so only one refresh may be in flight at a time.
import { reactive, readonly } from "vue";
import { api, useTokens } from "./api/client";
import type { Session, User } from "./api/types";

const REFRESH_KEY = "coupons.refresh_token";
const EARLY_SECONDS = 30; // refresh this long before the access token expires

const state = reactive({ user: null as User | null });
let accessToken = "";
let timer: ReturnType<typeof setTimeout> | undefined;
let refreshing: Promise<boolean> | null = null;

export const session = readonly(state);

export function isAdmin(): boolean {
  return state.user?.role === "ADMIN";
}

function adopt(answer: Session): void {
  accessToken = answer.access_token ?? "";
  state.user = answer.user ?? null;
  sessionStorage.setItem(REFRESH_KEY, answer.refresh_token ?? "");
  clearTimeout(timer);
  const seconds = Math.max((answer.expires_in ?? 0) - EARLY_SECONDS, 5);
  timer = setTimeout(() => void refresh(), seconds * 1000);
}

function forget(): void {
  accessToken = "";
  state.user = null;
  sessionStorage.removeItem(REFRESH_KEY);
  clearTimeout(timer);
}

export async function signIn(email: string, password: string): Promise<void> {
  adopt(await api<Session>("POST", "/api/v1/auth/login", { email, password }));
}

export async function register(email: string, password: string, name: string): Promise<void> {
  adopt(await api<Session>("POST", "/api/v1/auth/register", { email, password, name }));
}

export function signOut(): void {
  forget();
}

// The one refresh in flight, shared by every caller. It is cleared when it settles, in a later microtask:
// a finally inside the async function would run before `??=` stores the promise when it settles at once
// (no stored token), and the settled promise would then answer every later refresh.
export function refresh(): Promise<boolean> {
  refreshing ??= renew().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

async function renew(): Promise<boolean> {
  const token = sessionStorage.getItem(REFRESH_KEY);
  if (!token) return false;
  try {
    adopt(await api<Session>("POST", "/api/v1/auth/refresh", { refresh_token: token }));
    return true;
  } catch {
    forget();
    return false;
  }
}

useTokens({ accessToken: () => accessToken, refresh });
