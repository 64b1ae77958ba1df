// Admin screens name people by e-mail, not by id: the accounts are loaded once and looked up locally.
import { ref } from "vue";
import { api, withQuery } from "./api/client";
import type { ListUsersResponse, User } from "./api/types";
import { session } from "./session";

export const users = ref<User[]>([]);
let loading: Promise<User[]> | null = null;

export function loadUsers(force = false): Promise<User[]> {
  if (force) loading = null;
  loading ??= (async () => {
    const all: User[] = [];
    let token = "";
    do {
      const page = await api<ListUsersResponse>("GET", withQuery("/api/v1/users", { page_size: 1000, page_token: token }));
      all.push(...(page.users ?? []));
      token = page.next_page_token ?? "";
    } while (token);
    users.value = all;
    return all;
  })().catch((error) => {
    loading = null;
    throw error;
  });
  return loading;
}

export function userLabel(id: string | undefined): string {
  if (!id) return "";
  if (id === session.user?.id) return session.user.email ?? "you";
  return users.value.find((user) => user.id === id)?.email ?? "an account no longer listed";
}

const UUID = /\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi;

// A service's sentence may name an account by its id; people know it by its e-mail.
export function withEmails(text: string): string {
  return text.replace(UUID, (id) => {
    const label = userLabel(id);
    return label === "an account no longer listed" ? id : label;
  });
}
