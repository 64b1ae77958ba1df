// The books, loaded once and shared by the screens that name a book by its id (events, distributions) or
// offer books (the claim form), without a call per item. An admin's change to a book reloads them.
import { ref } from "vue";
import { api, withQuery } from "./api/client";
import type { Book, ListBooksResponse } from "./api/types";

const PAGE_SIZE = 1000; // the API's largest page
export const books = ref<Book[]>([]);
let loading: Promise<Book[]> | null = null;

export function loadBooks(force = false): Promise<Book[]> {
  if (force) loading = null;
  loading ??= (async () => {
    const all: Book[] = [];
    let token = "";
    do {
      const page = await api<ListBooksResponse>(
        "GET",
        withQuery("/api/v1/books", { page_size: PAGE_SIZE, page_token: token }),
      );
      all.push(...(page.books ?? []));
      token = page.next_page_token ?? "";
    } while (token);
    books.value = all;
    return all;
  })().catch((error) => {
    loading = null;
    throw error;
  });
  return loading;
}

export function bookName(id: string | undefined): string {
  return books.value.find((book) => book.id === id)?.name ?? "Unknown book";
}
