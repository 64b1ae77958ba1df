// Calls to the gateway on the page's own origin. The session (session.ts) supplies the bearer token; a 401
// on a signed-in call refreshes the session once and retries, so an expired access token never shows.
import { ApiError } from "./errors";
import type { Status } from "./types";

export interface TokenSource {
  accessToken(): string;
  refresh(): Promise<boolean>; // true when a new access token was obtained
}

let tokens: TokenSource | null = null;

export function useTokens(source: TokenSource): void {
  tokens = source;
}

type Query = Record<string, string | number | boolean | undefined>;

export function withQuery(path: string, query: Query = {}): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

async function send(method: string, path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  const headers: Record<string, string> = {};
  const token = tokens?.accessToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
}

async function failure(response: Response): Promise<ApiError> {
  let status: Status;
  try {
    status = (await response.json()) as Status;
  } catch {
    status = { code: 2, message: `The server answered HTTP ${response.status}.` };
  }
  return new ApiError(response.status, status);
}

async function authorized(method: string, path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  let response = await send(method, path, body, signal);
  if (response.status === 401 && tokens?.accessToken() && (await tokens.refresh())) {
    response = await send(method, path, body, signal);
  }
  if (!response.ok) throw await failure(response);
  return response;
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const response = await authorized(method, path, body);
  return (await response.json()) as T;
}

// A server-streaming call: the gateway answers NDJSON, one message per line, and an error after the first
// message as a last line {"error": Status}. A GET stream (the events watch) has no body; `signal` stops it.
export async function stream<T>(
  method: "GET" | "POST",
  path: string,
  body: unknown,
  onMessage: (message: T) => void,
  signal?: AbortSignal,
): Promise<void> {
  const response = await authorized(method, path, body, signal);
  if (!response.body) throw new Error("The server sent no progress.");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffered += value ?? "";
    const lines = buffered.split("\n");
    buffered = done ? "" : (lines.pop() ?? "");
    for (const line of lines) {
      if (!line.trim()) continue;
      const parsed = JSON.parse(line) as T | { error: Status };
      if (parsed && typeof parsed === "object" && "error" in parsed) throw new ApiError(200, parsed.error);
      onMessage(parsed as T);
    }
    if (done) return;
  }
}
